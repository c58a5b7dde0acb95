"""Networks exported to the device and the cloud: the kws front end and
speech_embedding, the ResNet family, and the two task programs."""

from knowcache.models.nets import (  # noqa: F401
    FULL_CONFIGS, STUDENT_WIDTH, KwsNet, ModelRecord, VisionNet, build_net)
from knowcache.models.resnet import ResNet, ResNetConfig, parameter_count  # noqa: F401
