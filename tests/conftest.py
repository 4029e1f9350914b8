"""The harness's own tests."""

import signal

# Tests that prove teardown on Ctrl-C send SIGINT to the runs they start. A shell that starts a job
# in the background (`cmd &` without job control, nohup) starts it with SIGINT ignored, and an
# ignored signal stays ignored across exec: the runs under test would never see the Ctrl-C. A
# handled signal is reset to its default on exec, so handling it here gives every child the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
