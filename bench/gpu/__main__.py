"""``python -m bench.gpu``: the GPU benchmark (:mod:`bench.gpu.compare`); exit status 2 without CUDA."""

from bench.gpu.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
