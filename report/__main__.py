"""``python -m report [--results-dir DIR] [--out-dir DIR] [--root DIR]``: build report.{md,pdf}."""
import argparse

from report.build import build


def main(argv=None) -> None:
    """Parse the command line and build the report."""
    ap = argparse.ArgumentParser(
        prog="python -m report",
        description="Build report.md and report.pdf from results.json, the Lab 1 notebook "
                    "and report/answers.md.")
    ap.add_argument("--results-dir", default=None,
                    help="folder with results.json and hw4 figures (default: report/; "
                         "report/quick for quick mode)")
    ap.add_argument("--out-dir", default=None, help="where report.md/pdf go (default: results dir)")
    ap.add_argument("--root", default=None, help="repository root with the Lab 1 notebook "
                                                 "(default: this checkout)")
    args = ap.parse_args(argv)
    pdf = build(args.results_dir, args.out_dir, args.root)
    print(f"wrote {pdf.with_suffix('.md')} and {pdf}")


if __name__ == "__main__":
    main()
