"""cryod: edge daemon for a cryoablation console (research use only, NICE IPG747/HTG652).

The subpackages live at the top of the repository (``daemon/``, ``drivers/``,
``simulators/``, ``config/``) and are installed under this one namespace, so
no bare ``daemon`` or ``drivers`` module ever shadows a PyPI package.
"""

__version__ = "0.1.0"
