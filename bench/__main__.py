"""`make bench`: start (or reuse) the local stack, then run every benchmark and print its table."""

import importlib
import subprocess
import sys
from collections.abc import Iterable

# intake last: its ~15k deployments keep provisioning busy for minutes after it ends. bench.gpu prints that it was
# skipped where there is no CUDA, and the next bench runs. Each module (or package) here exposes main(argv).
BENCHES = (
    "bench.orchestration",
    "bench.first_job",
    "bench.webhooks",
    "bench.sweep",
    "bench.inference",
    "bench.worker_fetch",
    "bench.gpu",
    "bench.intake",
)


def run(names: Iterable[str]) -> None:
    """Each bench's ``main([])`` in turn; one that is not there yet is named and passed over."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"({name} is not available yet)")
            continue
        print(f"\n=== {name} ===")
        module.main([])


def main() -> int:
    subprocess.run([sys.executable, "-m", "local", "up"], check=True, stdout=subprocess.DEVNULL)
    run(BENCHES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
