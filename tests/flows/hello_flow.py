"""Small runs for list_runs: tags, statuses (the end step can fail)."""
from metaflow import FlowSpec, Parameter, step


class HelloFlow(FlowSpec):
    fail_end = Parameter("fail_end", default=False, type=bool)

    @step
    def start(self):
        self.greeting = "hello"
        self.next(self.end)

    @step
    def end(self):
        if self.fail_end:
            raise KeyError("HELLO_END_FAIL")


if __name__ == "__main__":
    HelloFlow()
