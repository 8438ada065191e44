def load(path): raise NotImplementedError
def state_dict_from_onnx(path): raise NotImplementedError
