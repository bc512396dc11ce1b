"""A wide foreach whose last items fail (no retry); the runtime then aborts."""
from metaflow import FlowSpec, Parameter, step


class WideFlow(FlowSpec):
    width = Parameter("width", default=200, type=int)
    failing = Parameter("failing", default=4, type=int, help="the last N items fail")

    @step
    def start(self):
        self.items = list(range(self.width))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.value = self.input * 2
        print("working on item", self.input)
        # Failures sit at the end of the foreach so that every task starts first;
        # the runtime then aborts and kills whatever is still running.
        if self.input >= self.width - self.failing:
            raise ValueError("WIDE_BOOM item=%d" % self.input)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    WideFlow()
