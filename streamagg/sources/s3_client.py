"""The S3 client: endpoint checks, credentials and region, retries, and secret-free error lines."""

from __future__ import annotations

import math
import os
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

from ..config import shown
from ..errors import StorageError, UsageError
from . import redact

# Standard mode retries throttling, 5xx and broken connections with exponential backoff and
# jitter: 5 attempts in all (botocore's "max_attempts" would count retries, giving 6).
RETRY_CONFIG = BotoConfig(
    retries={"total_max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
)


def make_client(endpoint_url: str | None = None, *,
                credential_seconds: float = math.inf) -> Any:
    """A boto3 S3 client from the default chain, honouring the original job's variable names.

    The region is ``AWS_REGION`` when set, else boto3's own chain (``AWS_DEFAULT_REGION``, the
    profile's ``region`` in ``~/.aws/config``), else botocore's default, ``us-east-1``.
    Credentials are resolved here, within ``credential_seconds`` (a ``credential_process``, an
    SSO cache, a container or instance-role endpoint may hang). Every mistake found here is
    exit 2 naming what to fix (an unknown profile, a key without its secret, a config file that
    does not parse, a bad region, a credential_process that fails); finding no credentials at
    all is too, at the first call (`credentials`).
    """
    env = os.environ
    kwargs: dict[str, Any] = {}
    if not env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_ACCESS_KEY") and env.get("AWS_SECRET"):
        kwargs = {"aws_access_key_id": env["AWS_ACCESS_KEY"],
                  "aws_secret_access_key": env["AWS_SECRET"]}
    endpoint = endpoint_url or check_endpoint(env.get("AWS_ENDPOINT_URL") or None,
                                              origin="AWS_ENDPOINT_URL")
    bundle = env.get("AWS_CA_BUNDLE")
    if bundle and not os.path.isfile(os.path.expanduser(bundle)):
        raise UsageError("AWS_CA_BUNDLE names no file: give the path of a PEM bundle of "
                         "certificate authorities, or unset it", uri=bundle)
    # AWS_REGION is what other AWS SDKs (and Lambda, ECS) set; botocore reads only
    # AWS_DEFAULT_REGION and the profile. None lets botocore's chain choose (us-east-1 last).
    region = env.get("AWS_REGION") or None
    try:
        session = boto3.session.Session(**kwargs)
        # Resolved now, bounded: botocore would resolve them inside the first call, where a
        # hung credential_process or endpoint is beyond any call's deadline.
        within(credential_seconds, session.get_credentials)
        return session.client("s3", endpoint_url=endpoint, region_name=region,
                              config=RETRY_CONFIG)
    except botocore.exceptions.InvalidRegionError as err:
        where = "AWS_REGION" if region else "AWS_DEFAULT_REGION or the profile's region"
        raise UsageError(f"invalid AWS region {shown(err.kwargs.get('region_name', ''))}: "
                         f"check {where}") from err
    except ValueError as err:
        # botocore puts the whole URL, any user:secret@ included, in this message: never show it.
        where = (f" {_redact_endpoint(endpoint)!r}" if endpoint
                 else " (from AWS_ENDPOINT_URL_S3 or the AWS config file)")
        raise UsageError(f"invalid S3 endpoint URL{where}") from err
    except (botocore.exceptions.ProfileNotFound,
            botocore.exceptions.PartialCredentialsError) as err:
        raise credentials(err) from err
    except botocore.exceptions.BotoCoreError as err:
        raise UsageError(setup_problem(err)) from err


class CredentialsTimeout(StorageError):
    """The credential chain gave no answer within its deadline (exit 1: it may be transient)."""


def within(seconds: float, resolve: Callable[[], Any]) -> Any:
    """``resolve()`` on a helper thread, given up on after ``seconds``. A thread cannot be
    stopped: one stuck in a provider that never answers is left behind (a daemon), the run
    fails now. Errors of the chain are raised here as they are, but a provider's `ValueError`
    (a credential_process printing what is not JSON) is a credential mistake, not the
    endpoint's."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = resolve()
        except ValueError as err:  # not botocore's own (InvalidRegionError is raised later)
            outcome["error"] = UsageError(f"AWS credentials could not be read: {_first(err)} "
                                          f"(a credential_process printing what is not JSON?)")
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = err

    if seconds == math.inf:
        run()
    else:
        thread = threading.Thread(target=run, name="s3-credentials", daemon=True)
        thread.start()
        thread.join(min(seconds, threading.TIMEOUT_MAX))
        if thread.is_alive():
            raise CredentialsTimeout(
                f"S3 credentials failed: no answer from the AWS credential chain within its "
                f"deadline of {seconds:,.3g} s (STREAMAGG_S3_DEADLINE): a credential_process, "
                "SSO, container or instance-role endpoint that hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def setup_problem(err: BaseException) -> str:
    """What to fix, for an error met while setting up the client (credentials, AWS files)."""
    kwargs: dict[str, Any] = getattr(err, "kwargs", {}) or {}
    if isinstance(err, botocore.exceptions.ConfigParseError):
        return (f"cannot parse the AWS config file {kwargs.get('path', '')}: fix it, or point "
                "AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE elsewhere")
    if isinstance(err, botocore.exceptions.CredentialRetrievalError):
        provider = str(kwargs.get("provider", "the credential chain"))
        # The provider's own words may quote a tool's output: only its first line, inert.
        return (f"AWS credentials from {_PROVIDER_NAMES.get(provider, provider)} failed: "
                f"{_first(kwargs.get('error_msg', ''))}")
    if isinstance(err, (botocore.exceptions.InvalidConfigError, botocore.exceptions.SSOError,
                        botocore.exceptions.TokenRetrievalError)):
        return f"invalid AWS configuration: {_first(err)}"
    return f"cannot set up the S3 client: {describe(err)}"


_PROVIDER_NAMES = {"custom-process": "the profile's credential_process",
                   "container-role": "the container credentials endpoint",
                   "sso": "AWS SSO", "assume-role": "the profile's role (assume-role)"}


def _first(text: object, limit: int = 200) -> str:
    """The first line of an error's text, cut to ``limit`` characters, for one line."""
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


# Where each credential provider of botocore's chain reads its values, for the error line.
_PROVIDERS = {"env": "the environment", "shared-credentials-file": "the shared credentials file",
              "config-file": "the AWS config file"}


def credentials(err: BaseException) -> UsageError:
    """A credential mistake as one line naming what to fix (exit 2). Only names of variables,
    profiles and files appear in it, never a value."""
    env = os.environ
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    if isinstance(err, botocore.exceptions.ProfileNotFound):
        name = err.kwargs.get("profile", profile)
        files = env.get("AWS_CONFIG_FILE", "~/.aws/config")
        return UsageError(f"AWS profile {name!r} not found in {files} or the shared credentials "
                          "file: check AWS_PROFILE (or --profile in the AWS config), or unset it")
    if isinstance(err, botocore.exceptions.PartialCredentialsError):
        provider = str(err.kwargs.get("provider", ""))
        missing = str(err.kwargs.get("cred_var", "")).strip("'")
        if provider == "env":
            given = ("AWS_ACCESS_KEY_ID" if missing == "AWS_SECRET_ACCESS_KEY"
                     else "AWS_SECRET_ACCESS_KEY")
            return UsageError(f"incomplete AWS credentials: {given} is set but {missing} is "
                              "not; set both, or neither to use a profile or role")
        where = _PROVIDERS.get(provider, provider or "the credential chain")
        return UsageError(f"incomplete AWS credentials in {where} (profile "
                          f"{profile or 'default'!r}): {missing} is missing")
    # No credentials anywhere: say which half of a pair was given, if one was.
    for given, wanted in (("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
                          ("AWS_ACCESS_KEY", "AWS_SECRET"), ("AWS_SECRET", "AWS_ACCESS_KEY")):
        if env.get(given) and not env.get(wanted) and not env.get("AWS_ACCESS_KEY_ID"):
            return UsageError(f"incomplete AWS credentials: {given} is set but {wanted} is not")
    held = f" (AWS profile {profile!r} holds none)" if profile else ""
    return UsageError(f"no AWS credentials found{held}: set AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance or "
                      "container role")


def check_endpoint(url: str | None, *, origin: str = "--endpoint-url") -> str | None:
    """The endpoint URL if botocore would accept it; else exit 2 naming it, redacted, and where
    it came from (``origin``: the option or the environment variable)."""
    if url is None:
        return None
    if "@" in url:
        # Consistent with s3:// URIs: botocore would not use them, and they must never show.
        raise UsageError(f"credentials in an S3 endpoint URL are refused "
                         f"({_redact_endpoint(url)}, {origin}): use the AWS credential chain")
    try:
        host = urllib.parse.urlsplit(url).netloc if "://" in url else ""
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        host = ""
    if not host or not (is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)):
        raise UsageError(f"invalid S3 endpoint URL {_redact_endpoint(url)!r} ({origin}): "
                         "expected http(s)://host[:port] with a valid host name")
    return url


def _redact_endpoint(url: str) -> str:
    """An endpoint URL with everything up to its last ``@`` hidden: a secret typed into it raw
    may hold ``/``, which would end the authority early for `redact`."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return redact(url)


_CODES = {
    "NoSuchBucket": "bucket does not exist",
    "NoSuchKey": "object does not exist (deleted since it was listed?)",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "InvalidAccessKeyId": "invalid AWS access key",
    "SignatureDoesNotMatch": "AWS secret key does not match",
    "ExpiredToken": "AWS session token expired",
    "PreconditionFailed": "object changed since it was listed",
    "NoSuchUpload": "multipart upload no longer exists (aborted by another run?)",
}


# The words of the error line for each S3 call the storage makes.
CALLS = {
    "ListObjectsV2": "list", "ListMultipartUploads": "list uploads", "HeadBucket": "check bucket",
    "HeadObject": "head", "GetObject": "read", "PutObject": "upload",
    "CreateMultipartUpload": "start upload", "UploadPart": "upload part",
    "CompleteMultipartUpload": "complete upload", "AbortMultipartUpload": "abort upload",
    "DeleteObject": "delete",
}


def failure(operation: str, err: BaseException, endpoint: str | None = None) -> str:
    """``S3 <operation> failed[ after N attempts]: <reason>``, without secrets."""
    backend = getattr(err, "backend_error", err)
    attempts = 0
    if isinstance(backend, botocore.exceptions.ClientError):
        attempts = backend.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
    after = f" after {attempts} attempts" if attempts > 1 else ""
    return f"S3 {operation} failed{after}: {describe(err, endpoint)}"


def describe(err: BaseException, endpoint: str | None = None) -> str:
    """A short, secret-free reason for a failed S3 call; ``endpoint`` is named when it cannot
    be reached."""
    # smart_open wraps the botocore error of a GET in an OSError and keeps it here.
    backend = getattr(err, "backend_error", None)
    if isinstance(backend, botocore.exceptions.ClientError):
        err = backend
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", "Error"))
        return _CODES.get(code) or f"{code}: {error.get('Message') or ''}".strip(": ")
    if isinstance(err, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectTimeoutError)):
        return ("cannot reach the S3 endpoint"
                + (f" {_redact_endpoint(endpoint)}" if endpoint else ""))
    if isinstance(err, botocore.exceptions.ReadTimeoutError):
        return "the S3 endpoint stopped answering (read timeout)"
    if isinstance(err, botocore.exceptions.ProxyConnectionError):
        # botocore hides a user:password of the proxy URL already (mask_proxy_url).
        proxy = str(getattr(err, "kwargs", {}).get("proxy_url", ""))
        return (f"cannot reach the proxy {proxy} (HTTPS_PROXY / HTTP_PROXY; NO_PROXY lists "
                "the hosts reached without it)")
    if isinstance(err, botocore.exceptions.SSLError):
        cause = getattr(err, "kwargs", {}).get("error", "")
        bundle = os.environ.get("AWS_CA_BUNDLE")
        return (f"TLS with the S3 endpoint{f' {_redact_endpoint(endpoint)}' if endpoint else ''}"
                f" failed: {_ssl_reason(cause)}"
                + (f" (AWS_CA_BUNDLE={bundle})" if bundle else ""))
    if isinstance(err, (botocore.exceptions.CredentialRetrievalError,
                        botocore.exceptions.InvalidConfigError,
                        botocore.exceptions.SSOError)):
        return setup_problem(err)
    if isinstance(err, (botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ResponseStreamingError, ConnectionError)):
        return "connection lost"
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return type(err).__name__
    text = str(err)
    if "failed to read" in text and "attempts" in text:  # smart_open's re-reads ran out
        return "connection lost mid-read, and re-reading failed on every attempt"
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def _ssl_reason(cause: object) -> str:
    """The innermost reason of a TLS failure, e.g. ``certificate verify failed: self-signed
    certificate`` or ``No such file or directory``."""
    args = getattr(cause, "args", None)
    while args and isinstance(args[0], BaseException):
        cause = args[0]
        args = cause.args
    text = getattr(cause, "reason", None) or getattr(cause, "strerror", None) or str(cause)
    return _first(text) if str(text).strip() else "handshake refused"
