"""tinymeta: MAML, FOMAML, Reptile, ANIL and Meta-SGD written directly on the ``autograd``
engine of this repository.

    tinymeta.models      models with explicit parameters (MLP, Conv4)
    tinymeta.optim       SGD and Adam for the outer loop
    tinymeta.algorithms  MAML/FOMAML, ANIL, Meta-SGD, Reptile, MAML for RL
    tinymeta.tasks       task distributions: sinusoids, N-way K-shot episodes
    tinymeta.data        Omniglot loading and splits
    tinymeta.rl          2D navigation, Gaussian policy, baseline, policy-gradient losses, TRPO
"""
__version__ = "0.1.0"
