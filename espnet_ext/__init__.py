"""espnet_ext: CIF ASR with hierarchical knowledge distillation and DR-KD internal-LM estimation,
as an ESPnet2 extension. Importing the package registers its classes in ESPnet2's registries."""
from espnet_ext.registry import install as _install_registry

__version__ = "0.1.0"
_install_registry()
