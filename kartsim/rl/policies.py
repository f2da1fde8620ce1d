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
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

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
        self, observation_space: gym.spaces.Dict, features_dim: int = 512, telemetry_hidden: int = TELEMETRY_HIDDEN
    ) -> None:
        if features_dim <= 0:
            raise ValueError("features_dim must be > 0")
        super().__init__(observation_space, features_dim)
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
        # uint8 values (SB3's preprocess_obs has made them float) -> (N, C, H, W) in [0, 1]
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)
        image = image.float() / 255.0
        image_features = self.cnn(image.contiguous(memory_format=th.channels_last))
        telemetry_features = self.telemetry_mlp(observations["telemetry"].float())
        return self.fusion(th.cat([image_features, telemetry_features], dim=1))


def policy_for(vision: bool, features_dim: int = 512) -> tuple[str, dict[str, Any]]:
    """(SB3 policy name, policy_kwargs) for PPO."""
    if vision:
        return "MultiInputPolicy", {
            "features_extractor_class": KartVisionExtractor,
            "features_extractor_kwargs": {"features_dim": int(features_dim)},
            "normalize_images": False,
            "net_arch": VISION_NET_ARCH,
        }
    return "MlpPolicy", {"net_arch": RAYS_NET_ARCH}


def display_policy_name(vision: bool) -> str:
    """The name the user guide prints ("CnnPolicy" for the vision policy)."""
    return "CnnPolicy" if vision else "MlpPolicy"
