"""One Markdown row of benchmarks/trust/calibration.sh from `fusion eval --json` on stdin."""

import json
import sys

e = json.load(sys.stdin)
c = e["calibration"]
b, a = c["before"], c["after"]
cov = " | ".join("%.3f / %.2f" % (k["achieved"], k["mean_set_size"]) for k in c["coverage"])
print("| %s | %.3f | %.4f → %.4f | %.4f → %.4f | %.4f → %.4f | %s |" % (
    sys.argv[1], c["temperature"], b["accuracy"], a["accuracy"], b["nll"], a["nll"], b["ece"], a["ece"], cov))
