"""The meta-learning algorithms, each written beside its equation from the paper."""
from .base import MetaLearner
from .maml import MAML
from .anil import ANIL
from .metasgd import MetaSGD
from .reptile import Reptile
