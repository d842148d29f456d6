"""The bridge between advbridge and the reference libraries: attack and defense specs, the runner, one adapter
per library (:mod:`advbridge.bridge.adapters`), I/O, provenance and ``torchrun`` support."""
