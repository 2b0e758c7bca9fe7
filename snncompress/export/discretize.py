"""snnTorch's discrete-time neuron parameters <-> NIR's continuous-time ones.

NIR's LIF is ``tau * dv/dt = (v_leak - v) + R * I``. One forward-Euler step of length ``dt`` gives

    v[t+1] = (1 - dt/tau) * v[t] + (R * dt/tau) * I[t]        (v_leak = 0)

so ``beta = 1 - dt/tau`` and the input gain is ``g = R * dt/tau``. snnTorch's ``export_to_nir`` and
``import_from_nir`` use exactly this with ``dt = 1e-4`` and write ``R = tau/dt`` (``g = 1``); we do
the same, so files move between the two tools. CubaLIF adds the synaptic current
``tau_syn * dI/dt = -I + w_in * S``: ``alpha = 1 - dt/tau_syn``, gain ``w_in * dt/tau_syn``, and
snnTorch writes ``w_in = tau_syn/dt``. IF (``dv/dt = R * I``) is a Leaky with ``beta = 1``; like
snnTorch's importer we read its gain as ``R`` (no ``dt``) and write ``R = 1``.

A gain other than 1 is folded into the threshold (``Vth / g``, the membrane then reads in units of
``1/g``): every spike is unchanged for both reset modes, as snnTorch's importer does.

Exactness: computed in float64 and cast to float32, ``beta -> tau -> beta`` returns the same float32
for ``beta = 0`` and every ``beta >= 1e-8`` (checked over millions of values); a smaller nonzero
beta comes back within 1e-15.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DT = 1e-4  # snnTorch's convention in export_to_nir / import_from_nir
# |g - 1| below this is rounding of R = tau/dt (float32 in snnTorch's files), not a real gain
GAIN_TOLERANCE = 1e-6


def tau_from_decay(decay: np.ndarray, dt: float) -> np.ndarray:
    """``tau = dt / (1 - decay)`` for a decay factor (beta or alpha) in [0, 1)."""
    return dt / (1.0 - np.asarray(decay, dtype=np.float64))


def decay_from_tau(tau: np.ndarray, dt: float) -> np.ndarray:
    """``decay = 1 - dt / tau`` (float64)."""
    return 1.0 - dt / np.asarray(tau, dtype=np.float64)


def lif_params(beta: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """NIR LIF ``tau`` and ``r`` (unit input gain) for snnTorch's ``beta``."""
    tau = tau_from_decay(beta, dt)
    return {"tau": tau, "r": tau / dt}


def cuba_params(alpha: np.ndarray, beta: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """NIR CubaLIF ``tau_syn``, ``tau_mem``, ``r`` and ``w_in`` (unit gains) for snnTorch's alpha, beta."""
    tau_syn = tau_from_decay(alpha, dt)
    tau_mem = tau_from_decay(beta, dt)
    return {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": tau_mem / dt, "w_in": tau_syn / dt}


def lif_gain(tau: np.ndarray, r: np.ndarray, dt: float) -> np.ndarray:
    """Input gain ``R * dt / tau`` of one Euler step."""
    return np.asarray(r, dtype=np.float64) * dt / np.asarray(tau, dtype=np.float64)


def cuba_gain(tau_syn: np.ndarray, w_in: np.ndarray, tau_mem: np.ndarray, r: np.ndarray,
              dt: float) -> np.ndarray:
    """Input gain ``(w_in * dt/tau_syn) * (R * dt/tau_mem)`` from spikes to membrane."""
    return lif_gain(tau_syn, w_in, dt) * lif_gain(tau_mem, r, dt)


def is_unit_gain(gain: np.ndarray) -> bool:
    return bool(np.all(np.abs(np.asarray(gain, dtype=np.float64) - 1.0) <= GAIN_TOLERANCE))
