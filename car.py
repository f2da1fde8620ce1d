"""The kart physics: ``python car.py`` prints the kart's measured limits; ``import car`` gives the model.

    from car import KartConfig, KartPhysics, KartState, kart_limits

    cfg = KartConfig(mass_kg=150.0)   # every figure is a documented field (kartsim.sim.config.KartConfig)
    print(kart_limits(cfg).top_speed)  # measured on the simulated physics, m/s

A batched dynamic bicycle model (numba kernels over arrays of karts): saturating tyres with a friction
circle and load transfer, tyre wear, wet grip, impact damage and wall collisions. The envs, training
and the AI driver all use it through ``kartsim.sim.race.Race``; this file is a short way in.
"""

from __future__ import annotations

import sys

from kartsim.sim.config import KartConfig
from kartsim.sim.physics import KartPhysics, KartState
from kartsim.drivers.racing_line import kart_limits

__all__ = ["KartConfig", "KartPhysics", "KartState", "kart_limits", "main"]


def main(argv: list[str] | None = None) -> int:
    """Print the default kart's figures and its limits as measured on the physics."""
    if argv:
        print("usage: python car.py   (prints the kart's measured limits; no options)", file=sys.stderr)
        return 2
    cfg = KartConfig()
    lim = kart_limits(cfg)
    g = 9.81
    print(f"kart:        {cfg.mass_kg:.0f} kg with driver, wheelbase {cfg.wheelbase_m:.2f} m, "
          f"{cfg.engine_power_w / 1000:.1f} kW")
    print(f"top speed:   {lim.top_speed:.1f} m/s ({lim.top_speed * 3.6:.0f} km/h)")
    print(f"lateral:     up to {lim.lateral.max() / g:.2f} g on dry asphalt")
    print(f"braking:     {lim.brake.min() / g:.2f}-{lim.brake.max() / g:.2f} g")
    print(f"wet track:   grip x{cfg.wet_grip:.2f}, damp x{cfg.damp_grip:.2f}")
    print("physics:     kartsim.sim.physics (KartConfig, KartState, KartPhysics); docs: README.md#physics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
