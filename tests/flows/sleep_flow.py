"""A run that stays alive: its nap step sleeps (for the running and killed states)."""
import time

from metaflow import FlowSpec, Parameter, step


class SleepFlow(FlowSpec):
    seconds = Parameter("seconds", default=600, type=int)

    @step
    def start(self):
        self.next(self.nap)

    @step
    def nap(self):
        print("napping", self.seconds, flush=True)
        time.sleep(self.seconds)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    SleepFlow()
