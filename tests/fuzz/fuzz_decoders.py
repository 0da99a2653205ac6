"""atheris (libFuzzer) harness for the drivers' decoders: the long run behind ``make fuzz``.

    .venv/bin/python -m pip install atheris
    .venv/bin/python tests/fuzz/fuzz_decoders.py -max_total_time=300

The first input byte picks the target (Modbus RTU, Modbus TCP, one line, a
line stream) and the request; the rest is the frame. Coverage-guided, so it
reaches what the CI-sized hypothesis run (tests/security/test_fuzz_decoders.py)
only samples. Any exception other than the decoder's documented one is a
crash libFuzzer reports with the input that caused it.

atheris ships a manylinux wheel for CPython 3.11 (no clang needed to
install it); without atheris this file says so and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        import cryod.drivers.lineproto
        import cryod.drivers.modbus  # noqa: F401

from tests.fuzz.targets import REQUESTS, TARGETS

_NAMES = sorted(TARGETS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[_NAMES[data[0] % len(_NAMES)]]
    req = REQUESTS[(data[0] // len(_NAMES)) % len(REQUESTS)]
    verdict = target(data[1:], req)
    if verdict not in ("ok", "bad"):
        raise AssertionError(f"unexpected verdict {verdict!r}")


def main() -> int:
    if atheris is None:
        print(
            "atheris is not installed: .venv/bin/python -m pip install atheris "
            "(or run the CI-sized tests/security/test_fuzz_decoders.py)",
            file=sys.stderr,
        )
        return 2
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
