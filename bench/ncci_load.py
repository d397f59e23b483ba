"""Loading a quarter of CMS NCCI files into a rule pack, and the NCCI rules' cost per visit.

    python -m bench.ncci_load [--rows 1000000] [--files 4] [--mue-rows 20000] [--visits 5000]

Writes a synthetic quarter to a temp dir in the layouts CMS ships: `--files` PTP zips
(ccipra-v999r0-f1.zip ...) of `--rows` rows each, each holding the tab-delimited .txt, and a
practitioner MUE CSV, with a copy of the built-in pack naming them in its [ncci] table. Then,
each in a fresh child process so that its peak resident memory is the load's own, it loads the
pack with the first PTP file only and with all of them, and prints the load time, the peak
resident memory (ru_maxrss) and what NCCI_PTP and MUE_EXCEEDED cost per visit.

The visits are the same in both runs and their codes all lie in the first file's column-1
range, so both runs find the same edits: the second only has four times as many loaded.
Goal: the full quarter (4 x 1M rows) loads in <= 20 s within 800 MB resident.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from rules.pack import DEFAULT_PACKS_DIR

PTP_HEADER = (
    "CPT only copyright 2025 American Medical Association. All rights reserved.\r\n"
    "Column1/Column2 Edits\r\n"
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale\r\n"
    "\t\tprior\tDate\tDate\t0=not allowed\t\r\n"
    "\t\tto 1996\t\t*=no data\t1=allowed\t\r\n"
    "\t\t\t\t\t9=not applicable\t\r\n"
)
MUE_HEADER = (
    '"CPT only copyright 2025 American Medical Association. All rights reserved.\r\n'
    'Applicable FARS/DFARS restrictions apply to government use."\r\n'
    '"HCPCS/\r\nCPT Code",Practitioner Services MUE Values,MUE Adjudication Indicator,'
    "MUE Rationale\r\n"
)
RATIONALES = (
    "Mutually exclusive procedures",
    "Misuse of column two code with column one code",
    "Standards of medical / surgical practice",
    "CPT Manual or CMS manual coding instructions",
)
MAI = ("1 Line Edit", "2 Date of Service Edit: Policy", "3 Date of Service Edit: Clinical")
CODES = 10_000  # distinct HCPCS/CPT codes in the synthetic files
QUARTERS = [f"{year}{month:02d}01" for year in range(1996, 2027) for month in (1, 4, 7, 10)]


def code_pool(count: int, rnd: random.Random) -> list[str]:
    """`count` distinct 5-character codes, sorted: CPT numbers, Category III, HCPCS level II."""
    codes: set[str] = {"97012", "97110", "97140", "97530"}
    while len(codes) < count:
        kind = rnd.random()
        if kind < 0.75:
            codes.add(f"{rnd.randrange(10000, 99999)}")
        elif kind < 0.85:
            codes.add(f"{rnd.randrange(0, 9999):04d}T")
        else:
            codes.add(f"{'ABCEGHJKLQV'[rnd.randrange(11)]}{rnd.randrange(0, 9999):04d}")
    return sorted(codes)


def write_quarter(folder: Path, files: int, rows: int, mue_rows: int, seed: int) -> list[str]:
    """The PTP zips and the MUE CSV; returns the PTP zip names. Each file covers a range of
    column-1 codes, as CMS splits them, with every pair once."""
    rnd = random.Random(seed)
    pool = code_pool(CODES, rnd)
    per_file = CODES // files
    partners = -(-rows // per_file)  # column-2 codes per column-1 code
    if partners >= CODES:
        raise SystemExit(f"--rows {rows}: at most {(CODES - 1) * per_file} rows per file")
    names = []
    for number in range(1, files + 1):
        stem = f"ccipra-v999r0-f{number}"
        names.append(f"{stem}.zip")
        with (
            zipfile.ZipFile(folder / f"{stem}.zip", "w", zipfile.ZIP_DEFLATED) as archive,
            archive.open(f"{stem}.txt", "w") as member,
        ):
            member.write(PTP_HEADER.encode())
            written = 0
            for index in range((number - 1) * per_file, number * per_file):
                lines: list[str] = []
                for k in range(partners + 1):  # 37 is prime to CODES: distinct partners
                    column2 = pool[(index + 1 + 37 * k) % CODES]
                    if written == rows or len(lines) == partners:
                        break
                    if column2 == pool[index]:
                        continue
                    written += 1
                    bits = rnd.getrandbits(20)
                    start = 1 + bits % (len(QUARTERS) - 2)
                    effective = QUARTERS[start]
                    kind = (bits >> 7) % 100
                    if kind < 80:
                        deletion = "*"
                    elif kind < 97:
                        deletion = QUARTERS[start + 1 + (bits >> 14) % (len(QUARTERS) - 1 - start)]
                    else:
                        deletion = effective  # never applied
                    indicator = "9" if kind % 20 == 3 else "0" if kind % 10 == 1 else "1"
                    prior = "*" if start == 1 else ""
                    lines.append(
                        f"{pool[index]}\t{column2}\t{prior}\t{effective}\t{deletion}\t"
                        f"{indicator}\t{RATIONALES[bits % 4]}\r\n"
                    )
                member.write("".join(lines).encode())
    extra = code_pool(mue_rows, random.Random(seed + 1))
    with (folder / "MCR_MUE_PractitionerServices_Eff_01-01-2099.csv").open("w", newline="") as f:
        f.write(MUE_HEADER)
        f.writelines(
            f"{code},{1 + n % 12},{MAI[n % 3]},Clinical: Data\r\n" for n, code in enumerate(extra)
        )
    return names


def write_pack(folder: Path, ptp_files: list[str]) -> None:
    text = (DEFAULT_PACKS_DIR / "cpt97012.toml").read_text()
    listed = ", ".join(f'"../{name}"' for name in ptp_files)
    text = text.replace("ptp_files = []", f"ptp_files = [{listed}]")
    text = text.replace(
        "mue_files = []", 'mue_files = ["../MCR_MUE_PractitionerServices_Eff_01-01-2099.csv"]'
    )
    folder.mkdir()
    (folder / "cpt97012.toml").write_text(text)


def child(pack_dir: Path, visits: int, files: int, seed: int) -> None:
    """Load the pack, then time the NCCI rules on visits; print the figures as JSON."""
    from rules.model import ChargeEvent
    from rules.pack import load_packs
    from rules.traction import VisitContext, mue_exceeded, ncci_ptp

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    pack = load_packs(pack_dir).packs[0]
    load_s = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    rnd = random.Random(seed)
    first_file = code_pool(CODES, random.Random(seed))[: CODES // files]
    contexts = []
    for number in range(visits):
        lines = [
            ChargeEvent.model_validate(_line(f"V{number}-{k}", rnd.choice(first_file), k))
            for k in range(4)
        ]
        contexts.append(VisitContext.of(lines, pack))
    best, holds = float("inf"), 0
    for _ in range(5):
        started = time.perf_counter()
        holds = 0
        for visit in contexts:
            for line in visit.lines:
                holds += (ncci_ptp(line, visit) is not None) + (
                    mue_exceeded(line, visit) is not None
                )
        best = min(best, time.perf_counter() - started)
    print(
        json.dumps(
            {
                "edits": len(pack.ptp_edits),
                "mue": len(pack.mue_limits),
                "load_s": load_s,
                "before_mb": before / 1024,
                "peak_mb": peak / 1024,
                "lookup_us": best / visits * 1e6,
                "holds": holds,
            }
        )
    )


def _line(charge_id: str, code: str, k: int) -> dict[str, object]:
    return {
        "event_id": f"E-{charge_id}",
        "event_type": "UPSERT",
        "occurred_at": f"2026-03-02T15:0{k}:00Z",
        "charge_id": charge_id,
        "patient_id": "P00000001",
        "encounter_id": "ENC1",
        "date_of_service": "2026-03-02",
        "cpt_code": code,
        "modifiers": ["XS"] if k == 3 else [],
        "units": 1 + k,
        "diagnosis_codes": ["M54.16"],
        "payer": {"payer_id": "AETNA", "name": "Aetna", "plan_type": "COMMERCIAL"},
        "rendering_provider": {"npi": "1234567893", "specialty": "PHYSICAL_THERAPIST"},
        "performed_by": "PROVIDER",
        "supervising_provider_in_suite": None,
        "traction": None,
        "documentation": {
            "medical_necessity": True,
            "device_and_region": True,
            "times_or_duration": True,
            "progress_note": True,
            "plan_of_care": "PHYSICAL_THERAPY",
        },
        "abn_on_file": False,
        "place_of_service": "11",
    }


def _run_child(pack_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.ncci_load", "--child", str(pack_dir)]
    command += ["--visits", str(args.visits), "--files", str(args.files), "--seed", str(args.seed)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"loading {pack_dir} failed:\n{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="PTP rows per file")
    parser.add_argument("--files", type=int, default=4, help="PTP files (zips)")
    parser.add_argument("--mue-rows", type=int, default=20_000)
    parser.add_argument("--visits", type=int, default=5_000, help="visits of 4 lines to time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.visits, args.files, args.seed)
        return
    with tempfile.TemporaryDirectory(prefix="ncci-load-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        names = write_quarter(folder, args.files, args.rows, args.mue_rows, args.seed)
        print(
            f"synthetic quarter: {args.files} PTP zips x {args.rows:,} rows (CMS TXT layout) + "
            f"MUE CSV of {args.mue_rows:,} rows, written in {time.perf_counter() - started:.1f} s"
        )
        write_pack(folder / "one", names[:1])
        write_pack(folder / "all", names)
        runs = [
            (1, _run_child(folder / "one", args)),
            (args.files, _run_child(folder / "all", args)),
        ]
    for files, run in runs:
        print(
            f"load, {files} PTP file(s) = {files * args.rows:,} rows -> {run['edits']:,.0f} "
            f"edits kept, {run['mue']:,.0f} MUEs: {run['load_s']:.2f} s, peak RSS "
            f"{run['peak_mb']:.0f} MB ({run['before_mb']:.0f} MB before loading)"
        )
    (_, one), (_, full) = runs
    print(
        f"NCCI_PTP + MUE_EXCEEDED per visit (4 lines, {args.visits:,} visits, best of 5): "
        f"{one['lookup_us']:.1f} us with {one['edits']:,.0f} edits loaded, "
        f"{full['lookup_us']:.1f} us with {full['edits']:,.0f} (holds found per pass: "
        f"{one['holds']:.0f} and {full['holds']:.0f})"
    )
    ok = full["load_s"] <= 20 and full["peak_mb"] <= 800
    print(f"goal (load <= 20 s, <= 800 MB resident): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
