"""A task with a log of several MB and a few ERROR lines."""
import sys

from metaflow import FlowSpec, Parameter, step


class LogFlow(FlowSpec):
    lines = Parameter("lines", default=60000, type=int)

    @step
    def start(self):
        self.next(self.noisy)

    @step
    def noisy(self):
        pad = "x" * 70
        for i in range(self.lines):
            if i in (1234, self.lines // 2):
                print("ERROR something went wrong at line %d" % i)
            print("line %06d %s" % (i, pad))
        print("LONG " + "y" * 3000 + " CUDA_OOM_MARKER")  # a match past any line cut
        print("LAST LINE OF STDOUT")
        print("stderr marker", file=sys.stderr)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    LogFlow()
