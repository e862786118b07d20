"""Model-zoo distribution: package a bundle with the code it needs, check it the way the zoo's CI does, and download
it hash-checked (``python -m smart_nets.zoo package|check|download|verify``)."""

from smart_nets.zoo.checks import MAX_FILE_BYTES, ZooCheckError, check_bundle, safe_extract
from smart_nets.zoo.download import download_bundle, load_index, verify_zip
from smart_nets.zoo.package import package_bundle

__all__ = [
    "MAX_FILE_BYTES",
    "ZooCheckError",
    "check_bundle",
    "download_bundle",
    "load_index",
    "package_bundle",
    "safe_extract",
    "verify_zip",
]
