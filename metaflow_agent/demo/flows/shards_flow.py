"""Demo: a foreach over data shards; the last few shards fail, shard 1 is flaky
and succeeds on its second attempt (@retry)."""
from metaflow import FlowSpec, Parameter, current, retry, step  # type: ignore[attr-defined]  # metaflow re-exports these dynamically


class DemoShardsFlow(FlowSpec):
    width = Parameter("width", default=40, type=int, help="number of shards")
    failing = Parameter("failing", default=3, type=int, help="the last N shards fail")

    @step
    def start(self):
        self.shards = list(range(self.width))
        self.next(self.process, foreach="shards")

    @retry(times=1, minutes_between_retries=0)
    @step
    def process(self):
        shard = self.input
        print(f"processing shard {shard} (attempt {current.retry_count})")
        if shard == 1 and current.retry_count == 0:
            raise ConnectionError("FLAKY_SHARD 1: connection reset, will retry")
        # Failures sit at the end of the foreach so that every shard starts first.
        if shard >= self.width - self.failing:
            raise ValueError(f"BAD_SHARD {shard}: corrupt input file shard-{shard:03d}.parquet")
        self.rows = 1000 + shard
        self.next(self.join)

    @step
    def join(self, inputs):
        self.rows = sum(i.rows for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("rows", self.rows)


if __name__ == "__main__":
    DemoShardsFlow()
