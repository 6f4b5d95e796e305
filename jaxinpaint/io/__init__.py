"""Reading and writing weights: model directories and workdirs (``checkpoint``), PyTorch files without
PyTorch (``torch_pickle``), and the one weight-tree checker every loader uses (``tree``)."""
