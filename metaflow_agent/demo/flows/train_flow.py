"""Demo: a training run with a large log and artifacts of several sizes
(a ~20 MB `weights` blob). `--lr 0` makes the train step fail."""
import random

from metaflow import FlowSpec, Parameter, step


class DemoTrainFlow(FlowSpec):
    lr = Parameter("lr", default=0.01, type=float, help="learning rate (0 fails)")
    weights_mb = Parameter("weights_mb", default=20, type=int, help="size of the weights artifact")
    log_lines = Parameter("log_lines", default=60000, type=int, help="lines printed by train")

    @step
    def start(self):
        self.config = {"lr": self.lr, "layers": [256, 128, 10], "optimizer": "adam"}
        self.vocab = [f"token{i:05d}" for i in range(20000)]
        self.next(self.train)

    @step
    def train(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        rng = random.Random(int(self.lr * 1e6))
        loss, history, pad = 2.5, [], "x" * 40
        for i in range(self.log_lines):
            loss = max(0.05, loss * (1 - self.lr / 50) + rng.uniform(-0.002, 0.002))
            if i % 100 == 0:
                history.append(round(loss, 5))
            if i in (4321, self.log_lines // 2, self.log_lines - 7):
                print(f"ERROR step {i}: gradient overflow, skipping batch")
            print(f"step {i:06d} loss={loss:.5f} lr={self.lr:g} batch={pad}")
        print(f"training done: final loss {loss:.5f}")
        self.history = history
        self.metrics = {"loss": round(loss, 5), "accuracy": round(1 - loss / 3, 4), "steps": self.log_lines}
        self.weights = rng.randbytes(self.weights_mb << 20)
        self.next(self.end)

    @step
    def end(self):
        self.score = self.metrics["accuracy"]


if __name__ == "__main__":
    DemoTrainFlow()
