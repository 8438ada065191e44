"""The machine facts the benchmarks print (cnnkit.bench.parse_cpuinfo, cpu_info, blas_pools)."""

from __future__ import annotations

from cnnkit import bench

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 \
avx512_vnni avx512_fp16 avx_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""

EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse4_2 avx avx2 fma f16c
"""


def test_parse_cpuinfo_with_avx512_and_amx():
    info = bench.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"  # the first processor's
    assert info["avx2"] and info["avx512f"] and info["avx_vnni"]
    assert info["avx512"] == sorted(
        [
            "avx512f",
            "avx512dq",
            "avx512cd",
            "avx512bw",
            "avx512vl",
            "avx512_bf16",
            "avx512_vnni",
            "avx512_fp16",
        ]
    )
    assert info["amx"] == ["amx_bf16", "amx_int8", "amx_tile"]
    summary = bench.cpu_summary(info)
    assert summary.startswith("Intel(R) Xeon(R) Platinum 8481C") and "AVX-512 (avx512_bf16" in summary
    assert "AMX (amx_bf16 amx_int8 amx_tile)" in summary and "no AVX-VNNI" not in summary


def test_parse_cpuinfo_avx2_only():
    info = bench.parse_cpuinfo(EPYC)
    assert info["model"] == "AMD EPYC 7B13"
    assert info["avx2"] and not info["avx512f"] and info["avx512"] == [] and info["amx"] == []
    assert info["flags"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]
    assert bench.cpu_summary(info) == "AMD EPYC 7B13; AVX2, no AVX-512, no AVX-VNNI, no AMX"


def test_parse_cpuinfo_of_nothing():
    info = bench.parse_cpuinfo("")
    assert info["model"] == "unknown" and not info["avx2"] and info["flags"] == []


def test_this_machine_and_its_blas():
    info = bench.cpu_info()
    assert info["usable_cpus"] >= 1 and info["summary"].startswith(info["model"])
    env = bench.environment()
    assert env["cpu"]["model"] == info["model"]
    pools = bench.blas_pools()  # threadpoolctl is a test dependency: NumPy's BLAS is found
    assert pools and all(p["num_threads"] >= 1 for p in pools)
    assert pools[0]["internal_api"] in bench.blas_kernel_line()
