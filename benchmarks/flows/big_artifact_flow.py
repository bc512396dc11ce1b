"""A task with one large, incompressible artifact (stored size ≈ its pickled size)."""
import os

from metaflow import FlowSpec, Parameter, step


class BigArtifactFlow(FlowSpec):
    big_mb = Parameter("big_mb", default=120, type=int)

    @step
    def start(self):
        self.big = os.urandom(self.big_mb * 1024 * 1024)
        self.config = {"lr": 0.01, "layers": [64, 32], "name": "model-a"}
        self.numbers = list(range(1000))
        self.note = "hello " * 50
        self.next(self.end)

    @step
    def end(self):
        self.score = 0.93


if __name__ == "__main__":
    BigArtifactFlow()
