"""What several test modules need, in one place: composing configs, writing small data sets, running the CLI,
finding processes, and setting a Spark conf for one test. Test modules import from here, never each other."""
