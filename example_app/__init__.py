"""The example chat gateway (DESIGN §8). For now: the middleware and a visit counter."""
