#!/usr/bin/env python3
"""Drives botocore's own IMDS credential refresh on a fake clock.

botocore (the one installed, unchanged) reads instance credentials from
kube2ra through its default chain (AWS_EC2_METADATA_SERVICE_ENDPOINT points
it at the test's proxy). Only its two clocks are replaced: the one
RefreshableCredentials asks whether to refresh, and the one utils.py's
_evaluate_expiration uses to decide whether to extend credentials that
expire soon. Every --call-every seconds of fake time the driver moves the
Go side's clock (POST /clock), then takes the frozen credentials exactly as
botocore's signer does before each API call, and reports the access key it
would sign with (POST /signed). The Go test decides whether that key had
expired; this script only reports.
"""
import argparse
import datetime
import http.client
import json
import random
import sys

import botocore
import botocore.session
import botocore.utils


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--control", required=True, help="host:port of the test's clock and report endpoint")
    p.add_argument("--start", type=float, required=True, help="fake time at the start, Unix seconds")
    p.add_argument("--seconds", type=int, required=True, help="fake seconds to run")
    p.add_argument("--call-every", type=int, default=10, help="fake seconds between API calls")
    p.add_argument("--seed", type=int, default=1, help="seed of botocore's extension jitter")
    a = p.parse_args()

    random.seed(a.seed)
    now = [a.start]

    def fake_utc(remove_tzinfo=True):
        d = datetime.datetime.fromtimestamp(now[0], datetime.timezone.utc)
        return d.replace(tzinfo=None) if remove_tzinfo else d

    botocore.utils.get_current_datetime = fake_utc

    control = http.client.HTTPConnection(a.control, timeout=30)

    def post(path, body):
        control.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = control.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit("control %s answered %d: %s" % (path, r.status, data.decode(errors="replace")))

    creds = botocore.session.Session().get_credentials()
    if creds is None or getattr(creds, "method", None) != "iam-role":
        sys.exit("botocore found no instance credentials (method %r)" % getattr(creds, "method", None))
    creds._time_fetcher = lambda: fake_utc(remove_tzinfo=False)

    errors = 0
    end = a.start + a.seconds
    while now[0] < end:
        now[0] += a.call_every
        post("/clock", {"t": now[0]})
        try:
            frozen = creds.get_frozen_credentials()
        except Exception as e:  # a mandatory refresh that failed: the call fails too
            errors += 1
            post("/signed", {"t": now[0], "error": "%s: %s" % (type(e).__name__, e)})
            continue
        post("/signed", {"t": now[0], "akid": frozen.access_key})
    print(json.dumps({"botocore": botocore.__version__, "file": botocore.__file__, "errors": errors}))


if __name__ == "__main__":
    main()
