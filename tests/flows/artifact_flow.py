"""Artifacts of several sizes and types; parameters for compare_runs."""
from metaflow import FlowSpec, Parameter, step


class Opaque:
    """Defined in the flow file: unpicklable anywhere the flow's module is not importable."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


class ArtifactFlow(FlowSpec):
    alpha = Parameter("alpha", default=0.5, type=float)
    big_mb = Parameter("big_mb", default=3, type=int)

    @step
    def start(self):
        self.small_int = 42
        self.config = {"lr": self.alpha, "layers": [64, 32], "name": "model-a"}
        self.numbers = list(range(1000))
        self.blob = bytes(bytearray(range(256))) * (self.big_mb * 4096)
        self.text = "hello " * 50
        self.opaque = Opaque()
        self.next(self.end)

    @step
    def end(self):
        self.score = self.alpha * 2
        self.summary = {"score": self.score, "n": len(self.numbers)}


if __name__ == "__main__":
    ArtifactFlow()
