"""The experiment as configuration: the structured-config schema every Hydra group option is checked against
(`schema`), the checks its types cannot express, made before any data, model or Spark work (`validate`), and
the command-line overrides caught before Hydra composes (`overrides`)."""
