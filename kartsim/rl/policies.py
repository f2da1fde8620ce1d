"""Policies for the two observation kinds.

* Rays (``kartsim/Kart-v0``, a flat ``Box``): SB3's ``MlpPolicy`` with `RAYS_NET_ARCH`.
* Vision (``kartsim/KartVision-v0``, ``Dict(vision=uint8 image HxWxC, telemetry=float32 (9,))``):
  SB3's ``MultiInputPolicy`` with `KartVisionExtractor` as features extractor: the Nature-DQN CNN
  (32 filters 8x8 stride 4, 64 filters 4x4 stride 2, 64 filters 3x3 stride 1, ReLU, flatten) on the
  image, a small MLP on the telemetry, both concatenated and fused by Linear + ReLU into
  ``features_dim`` features. The policy and value heads (SB3's diagonal Gaussian for the continuous
  [steering, throttle] action, clipped to [-1, 1] when acting) sit on top of those features.

The env gives uint8 images, channels-last (H, W, C) with stacked frames on the channel axis, and
they stay uint8 through the rollout buffer. SB3 wraps a channels-last image env in
``VecTransposeImage`` (a free numpy view to (C, H, W)), so the model's observation space is
usually channels-first; the extractor accepts either layout (decided from the space it is built
with), and does the conversion itself: permute to NCHW when needed, divide by 255
(``normalize_images=False`` keeps SB3 from doing it twice), channels_last memory format for the
convolutions.

`KartVisionPolicy` is SB3's ``MultiInputActorCriticPolicy`` with two speed changes that leave it a
plain SB3 policy (``PPO.load`` works): the image reaches the CNN as uint8 (SB3 would first copy the
whole batch to float32), and the extractor runs under bfloat16 autocast when ``precision`` says so
(`resolve_precision`: "auto" = bf16 where the CPU or GPU has native bf16). The policy and value
heads, the action distribution and the losses stay float32.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

PRECISIONS = ("auto", "bf16", "fp32")

# Rays MLP: two hidden layers for both the policy and the value network.
RAYS_NET_ARCH: dict[str, list[int]] = {"pi": [128, 128], "vf": [128, 128]}
# Vision heads on top of the fused features.
VISION_NET_ARCH: dict[str, list[int]] = {"pi": [256], "vf": [256]}
TELEMETRY_HIDDEN = 64


def _image_space(observation_space: gym.spaces.Dict) -> gym.spaces.Box:
    space = observation_space["vision"]
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        raise ValueError(f"'vision' must be an (H, W, C) Box, got {space}")
    return space


class KartVisionExtractor(BaseFeaturesExtractor):
    """CNN on the camera image + MLP on the telemetry, fused into `features_dim` features.

    :param observation_space: ``Dict(vision=Box(0, 255, (H, W, C) or (C, H, W), uint8),
        telemetry=Box((T,)))``; ``C`` is 3 x frame_stack (RGB) or frame_stack (grayscale).
    :param features_dim: size of the fused feature vector (512 default; 1024 allowed).
    :param telemetry_hidden: width of the two telemetry MLP layers.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        features_dim: int = 512,
        telemetry_hidden: int = TELEMETRY_HIDDEN,
        bf16: bool = False,
    ) -> None:
        if features_dim <= 0:
            raise ValueError("features_dim must be > 0")
        super().__init__(observation_space, features_dim)
        self.bf16 = bf16
        image = _image_space(observation_space)
        self.channels_last = not is_image_space_channels_first(image)
        if self.channels_last:
            height, width, channels = image.shape
        else:
            channels, height, width = image.shape
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flat = self.cnn(th.zeros(1, channels, height, width)).shape[1]
        n_tel = int(observation_space["telemetry"].shape[0])
        self.telemetry_mlp = nn.Sequential(
            nn.Linear(n_tel, telemetry_hidden),
            nn.ReLU(),
            nn.Linear(telemetry_hidden, telemetry_hidden),
            nn.ReLU(),
        )
        self.fusion = nn.Sequential(nn.Linear(n_flat + telemetry_hidden, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        image = observations["vision"]
        # uint8 (KartVisionPolicy) or float (plain SB3 policies) 0..255 -> (N, C, H, W) in [0, 1]
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)
        # 0..255 -> [0, 1] is folded into the first convolution's weights (conv(x / 255) with w / 255
        # is the same sum) instead of a pass over the whole image batch; bf16 directly from uint8.
        image = image.contiguous(memory_format=th.channels_last).to(th.bfloat16 if self.bf16 else th.float32)
        conv1 = self.cnn[0]
        with th.autocast(device_type=image.device.type, dtype=th.bfloat16, enabled=self.bf16):
            first = F.conv2d(image, conv1.weight * (1.0 / 255.0), conv1.bias, conv1.stride)
            image_features = self.cnn[1:](first)
            telemetry_features = self.telemetry_mlp(observations["telemetry"].float())
            features = self.fusion(th.cat([image_features, telemetry_features], dim=1))
        return features.float()


class KartVisionPolicy(MultiInputActorCriticPolicy):
    """SB3's multi-input actor-critic whose image stays uint8 until the extractor (see module doc)."""

    def _features(self, obs: dict[str, th.Tensor], extractor: BaseFeaturesExtractor) -> th.Tensor:
        return extractor({key: value if key == "vision" else value.float() for key, value in obs.items()})

    def extract_features(self, obs, features_extractor: BaseFeaturesExtractor | None = None):  # type: ignore[override]
        if self.share_features_extractor:
            return self._features(obs, features_extractor or self.features_extractor)
        return self._features(obs, self.pi_features_extractor), self._features(obs, self.vf_features_extractor)

    def get_distribution(self, obs) -> Distribution:
        latent_pi = self.mlp_extractor.forward_actor(self._features(obs, self.pi_features_extractor))
        return self._get_action_dist_from_latent(latent_pi)

    def predict_values(self, obs) -> th.Tensor:
        return self.value_net(self.mlp_extractor.forward_critic(self._features(obs, self.vf_features_extractor)))


def bf16_supported(device: str) -> bool:
    """Whether ``device`` ("cpu" or "cuda...") computes bfloat16 natively (else autocast would be slow)."""
    if device.startswith("cuda"):
        return bool(th.cuda.is_available() and th.cuda.is_bf16_supported())
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """"bf16" or "fp32" for a ``--precision`` of auto / bf16 / fp32 on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def policy_for(vision: bool, features_dim: int = 512, precision: str = "fp32") -> tuple[Any, dict[str, Any]]:
    """(SB3 policy, policy_kwargs) for PPO; ``precision`` ("bf16"/"fp32", resolved) for the vision CNN."""
    if vision:
        return KartVisionPolicy, {
            "features_extractor_class": KartVisionExtractor,
            "features_extractor_kwargs": {"features_dim": int(features_dim), "bf16": precision == "bf16"},
            "normalize_images": False,
            "net_arch": VISION_NET_ARCH,
        }
    return "MlpPolicy", {"net_arch": RAYS_NET_ARCH}


def display_policy_name(vision: bool) -> str:
    """The name the user guide prints ("CnnPolicy" for the vision policy)."""
    return "CnnPolicy" if vision else "MlpPolicy"
