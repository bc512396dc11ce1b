"""A task killed mid-run (SIGKILL): it never records attempt_ok."""
import os
import signal

from metaflow import FlowSpec, step


class CrashFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.die)

    @step
    def die(self):
        print("about to be killed")
        os.kill(os.getpid(), signal.SIGKILL)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    CrashFlow()
