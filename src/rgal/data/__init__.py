"""Dataset loading: IDX (MNIST family), CIFAR pickles, image folders, and downloads."""
