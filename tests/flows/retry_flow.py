"""A @retry task that fails its first attempt and succeeds on the second."""
from metaflow import FlowSpec, current, retry, step


class RetryFlow(FlowSpec):
    @step
    def start(self):
        self.items = [0, 1, 2]
        self.next(self.work, foreach="items")

    @retry(times=2, minutes_between_retries=0)
    @step
    def work(self):
        print("attempt", current.retry_count, "item", self.input)
        if self.input == 1 and current.retry_count == 0:
            raise RuntimeError("RETRY_BOOM first attempt")
        self.value = self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.values = sorted(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RetryFlow()
