"""Stage: dicom."""
