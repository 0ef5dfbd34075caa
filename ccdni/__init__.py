"""ccdni: cortico-cerebellar learning as decoupled neural interfaces.

The project's own namespace for what is neither a brain region nor the orchestrator: the
``base`` every region stands on (spec, region shell, run directory, logging, seeding), the
``tasks``, the ``analysis`` of recorded activity, and ``reporting`` (figures, tables). The
regions (``areas``, ``cerebellum``, ``olive``), the wire protocol (``wire``) and the
``orchestrator`` are top-level packages beside it; ``docs/architecture.md`` draws the layers.
"""

__version__ = "0.2.0"
