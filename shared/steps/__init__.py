"""The provisioning steps: plain functions over one typed input and explicit collaborators (:class:`StepDeps`)."""
