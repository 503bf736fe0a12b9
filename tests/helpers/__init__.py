"""What several test modules need, in one place: composing configs, writing small data sets and event logs, running
the CLI or a run in a process of its own, finding processes, and setting a Spark conf for one test. Test modules
import from here, never each other."""
