"""Study data for research: profiles, the procedure-day record, FHIR and REDCap.

``cryod.research`` is pure and reusable: it imports nothing from the daemon,
the drivers or the simulators, so the daemon and the study collector both
build on it. Modules (one job each):

- ``vocab``: the code lists (enums with labels) of the record
- ``partial_dates``: ISO 8601 partial dates and interval-aware comparison
- ``profile``: study profiles (TOML, ``config/studies/``) and their content hash
- ``record``: the procedure-day record models
- ``validation``: checks of a record against a profile, every problem at once
- ``legacy``: the old six yes/no adverse-event codes as rows
- ``facts``: the console-side facts an export needs, as plain data
- ``fhir_bundle`` / ``fhir_check`` / ``fhir_library``: the FHIR R4B Bundle, the
  project's own check and the one module that imports ``fhir.resources``
- ``redcap_design`` / ``redcap_records`` / ``redcap_rules``: the longitudinal
  REDCap project, its records and the import rules it must pass

Room is left for CDISC SDTM (a later issue): it maps the same record models.
"""
