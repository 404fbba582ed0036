"""The meta-learning algorithms, gradient-based and metric-based, each written beside its equation from the paper, all
honouring the contract of ``base.MetaLearner``."""
from .base import MetaLearner, NonFiniteError
from .maml import MAML
from .anil import ANIL
from .metasgd import MetaSGD
from .reptile import Reptile
from .joint import JointTraining
from .protonet import ProtoNet
from .metric import MetricLearner
from .matching import MatchingNet, FullContextEmbedding
from .relation import RelationNet, RelationModel
from .siamese import Siamese, SiameseModel
from .imaml import IMAML
from .mann import MANN, MemoryNetwork
from .lstm_meta import LSTMMetaLearner
from .metanet import MetaNet, MetaNetModel
from .maml_rl import MAMLRL
