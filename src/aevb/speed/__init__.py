"""Speed code, fenced in one place: oneDNN matrix products and the hand-derived fast path.

Everything here is tested equal to autograd / float64 references (tests/test_fastpath.py, test_gemm.py)."""
