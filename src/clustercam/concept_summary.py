"""Entry point ``python -m clustercam.concept_summary``: the study lives in :mod:`clustercam.studies.concept_summary`."""

from clustercam.studies.concept_summary import main

if __name__ == "__main__":
    main()
