"""Check that the installed TensorFlow and tensorflow-io work together.

Run by `make setup`: `python -m tfpipe.check_install`. It fails when
tensorflow-io's compiled ops or file system plugins do not load, which is
what happens when TensorFlow is newer than the 2.17 ABI that tensorflow-io
0.37.1 was built against.
"""

import sys
import warnings


def main() -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import tensorflow as tf
        import tensorflow_io as tfio

        schemes = set(tf.io.gfile.get_registered_schemes())

    plugin_warnings = [str(w.message) for w in caught if "tensorflow_io" in str(w.filename) or "tensorflow_io" in str(w.message)]
    print(f"tensorflow {tf.__version__}, tensorflow-io {tfio.__version__}, keras {tf.keras.__version__ if hasattr(tf.keras, '__version__') else 'n/a'}")
    print("registered file system schemes:", " ".join(sorted(s for s in schemes if s)))

    problems = []
    if plugin_warnings:
        problems.append("tensorflow-io printed warnings while loading: " + " | ".join(plugin_warnings))
    if "s3" not in schemes:
        problems.append("the s3 file system is not registered, so tensorflow-io's plugins did not load")
    if problems:
        for problem in problems:
            print("error:", problem, file=sys.stderr)
        print(
            "Install the pinned set: pip install -c requirements/constraints.txt -e '.[cpu]'",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
