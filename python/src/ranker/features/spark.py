"""The feature pipeline on Spark: the table of `ranker.features.build`, value
for value, for click logs larger than one machine's memory.

It mirrors build.py step by step with the constants of spec.py, in native
Spark expressions only (no Python UDFs), so executors need a JVM and nothing
else. Where build.py uses an as-of join that excludes equal timestamps, this
unions the queries with the events and takes a running sum over a window
ordered by (time, queries first): a query sees exactly the events strictly
before it.

Floats are exact, not close: every value is computed by the same correctly
rounded operations in the same order as build.py. Two places need care:

- title vectors: numpy divides in float32 and takes a float32 square root;
  here both are done in float64 and rounded to float32, which gives the same
  float32 (float64 has more than 2 * 24 + 2 bits, so the double rounding of a
  quotient or square root is innocuous).
- title_similarity: the reader's profile sums at most RECENT_READS float32
  vectors of unit length in float64, which is exact in any order; the norm
  and the dot product are left folds in dimension order (`aggregate`), as
  build._dot_rows adds them.

PySpark is an optional dependency (`pip install 'ranker[spark]'`), imported
only when this engine runs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ranker.data.schema import (
    ARTICLES_FILE,
    IMPRESSIONS_FILE,
    REQUIRED_ARTICLE_COLUMNS,
    REQUIRED_IMPRESSION_COLUMNS,
)
from ranker.features.spec import (
    ARTICLE_WINDOWS_HOURS,
    CONTEXT_FEATURES,
    CTR_PRIOR,
    DEVICE_CODES,
    FEATURE_NAMES,
    LABEL_COLUMNS,
    RECENT_READS,
    TITLE_DIMENSIONS,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

INSTALL_HINT = "pip install 'ranker[spark]'"
SEMANTIC_UNSUPPORTED = (
    "the semantic features (--semantic) are not supported on the Spark engine yet: "
    "use --engine polars for them"
)
DEFAULT_MASTER = "local[*]"
# The driver only plans the job and receives no rows (the table goes to
# Parquet), so a small heap suffices whatever the size of the log.
DEFAULT_DRIVER_MEMORY = "1g"

_MICROS_PER_SECOND = 1_000_000
_MICROS_PER_HOUR = 3600 * _MICROS_PER_SECOND
_MICROS_PER_DAY = 24 * _MICROS_PER_HOUR
# Monday = 0, as build.py's `weekday() - 1`.
_EPOCH_WEEKDAY = dt.date(1970, 1, 1).weekday()
# Python's str.split() splits on runs of these (Java's \s knows only ASCII).
_WHITESPACE = "[" + "".join(f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace()) + "]+"


class SparkUnavailable(Exception):
    """PySpark or Java is missing: the message says what to install."""


@dataclass(frozen=True)
class SparkOptions:
    """Where and how the Spark engine runs."""

    master: str = DEFAULT_MASTER
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    # Any other Spark setting (spark.executor.memory, spark.sql.shuffle.partitions, ...).
    conf: tuple[tuple[str, str], ...] = ()


def require_spark() -> None:
    """Raise SparkUnavailable, saying what to install, without PySpark or Java."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(
            f"the Spark engine needs PySpark: {INSTALL_HINT} (and Java 17 or 21)"
        ) from None
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and not shutil.which("java"):
        raise SparkUnavailable(
            "the Spark engine needs Java 17 or 21: install a JRE (e.g. apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME"
        )


@contextmanager
def spark_session(options: SparkOptions) -> Iterator[SparkSession]:
    """A Spark session for the feature pipeline, stopped on exit."""
    require_spark()
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(options.master)
        .appName("ranker-features")
        .config("spark.driver.memory", options.driver_memory)
        # Time arithmetic is on UTC microseconds; nothing depends on the
        # machine's zone.
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if options.master.startswith("local") and not any(
        key == "spark.sql.shuffle.partitions" for key, _ in options.conf
    ):
        # Spark's 200 suit a cluster; on one machine each shuffle would run
        # hundreds of tiny tasks (over twice as slow on the test world).
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
    for key, value in options.conf:
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def _location(data: str | Path, name: str) -> str:
    """A file of the click log as every executor sees it: local paths made
    absolute (executors do not share the driver's working directory), URLs
    (hdfs://, s3a://) as given."""
    text = str(data)
    if "://" in text:
        return f"{text.rstrip('/')}/{name}"
    return str(Path(text).resolve() / name)


def _kind(dtype: Any) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, T.IntegralType):
        return "integer"
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType):
        return "datetime"
    if isinstance(dtype, T.BooleanType):
        return "boolean"
    if isinstance(dtype, T.StringType):
        return "string"
    return str(dtype.simpleString())


def _read(spark: SparkSession, location: str, required: Mapping[str, str]) -> DataFrame:
    """A Parquet file of the click log; a ValueError naming the file (and
    every missing or mistyped column) if it cannot be used."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        frame = spark.read.parquet(location)
    except (PySparkException, Py4JJavaError) as err:
        raise ValueError(f"{location}: not a readable Parquet file ({_first_line(err)})") from None
    problems = []
    for column, kind in required.items():
        if column not in frame.columns:
            problems.append(f"column {column} ({kind}) is missing")
        elif (found := _kind(frame.schema[column].dataType)) != kind:
            problems.append(f"column {column} is {found}, expected {kind}")
    if problems:
        raise ValueError(f"{location}: " + "; ".join(problems))
    return frame


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _micros(frame: DataFrame, column: str) -> Column:
    """A timestamp column as microseconds since the epoch. A timestamp
    without zone (what polars writes) is read as UTC, as polars reads it."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    value = F.col(column)
    if isinstance(frame.schema[column].dataType, T.TimestampNTZType):
        value = value.cast("timestamp")  # the session zone is UTC
    return F.unix_micros(value)


def _smoothed_ctr(clicks: Column, shows: Column) -> Column:
    prior_clicks, prior_shows = CTR_PRIOR
    return ((clicks + prior_clicks) / (shows + prior_shows)).cast("float")


def _hours(later: str, earlier: str) -> Column:
    """build.py's `(later - earlier).dt.total_seconds() / 3600.0` as Float32:
    whole seconds (truncated toward zero, as polars does), then hours."""
    from pyspark.sql import functions as F

    seconds = F.expr(f"({later} - {earlier}) div {_MICROS_PER_SECOND}")
    return (seconds / 3600.0).cast("float")


def _counts_before(
    queries: DataFrame, events: DataFrame, keys: list[str], at: str, prefix: str
) -> DataFrame:
    """Add `{prefix}_shows` and `{prefix}_clicks` to `queries`: the rows of
    `events` (keys, _t, clicked) with the same keys and _t strictly before
    `queries[at]`. The events, grouped by (keys, _t), are unioned with the
    queries and summed over a window ordered by time with queries first, so a
    query's running sum holds exactly the earlier events (build._counts_before)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    grouped = events.groupBy(*keys, "_t").agg(
        F.count(F.lit(1)).alias("_s"), F.sum(F.col("clicked").cast("long")).alias("_c")
    )
    marked = queries.withColumn("_at", F.col(at)).withColumn("_query", F.lit(True))
    union = marked.unionByName(
        grouped.select(
            *keys,
            F.col("_t").alias("_at"),
            F.lit(False).alias("_query"),
            "_s",
            "_c",
        ),
        allowMissingColumns=True,
    )
    window = (
        Window.partitionBy(*keys)
        .orderBy(F.col("_at"), F.col("_query").desc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        union.withColumn(f"{prefix}_shows", F.coalesce(F.sum("_s").over(window), F.lit(0)))
        .withColumn(f"{prefix}_clicks", F.coalesce(F.sum("_c").over(window), F.lit(0)))
        .filter(F.col("_query"))
        .drop("_at", "_query", "_s", "_c")
    )


def _device_code(device: Column) -> Column:
    from pyspark.sql import functions as F

    code = F.when(device.isNull(), F.lit(None))
    for name, value in DEVICE_CODES.items():
        code = code.when(device == name, F.lit(value))
    expected = ", ".join(DEVICE_CODES)
    return code.otherwise(
        F.raise_error(
            F.concat(
                F.lit(f"{IMPRESSIONS_FILE}: column device has value "),
                device,
                F.lit(f", expected one of {expected}"),
            )
        )
    ).cast("float")


def _title_vectors(articles: DataFrame) -> DataFrame:
    """(article_id, _vector): build.title_vectors, an array<float> of
    TITLE_DIMENSIONS per article, in native expressions."""
    from pyspark.sql import functions as F

    words = F.filter(F.split(F.coalesce(F.col("title"), F.lit("")), _WHITESPACE), lambda w: w != "")

    def add_word(counts: Column, word: Column) -> Column:
        h = F.crc32(F.encode(word, "UTF-8"))
        dimension = F.pmod(h, F.lit(TITLE_DIMENSIONS))
        sign = F.when(F.shiftright(h, 16).bitwiseAND(1) == 1, 1).otherwise(-1)
        return F.transform(counts, lambda c, i: c + F.when(i == dimension, sign).otherwise(0))

    counts = F.aggregate(words, F.array_repeat(F.lit(0), TITLE_DIMENSIONS), add_word)
    squares = F.aggregate(F.col("_counts"), F.lit(0).cast("long"), lambda a, c: a + c * c)
    norm = F.sqrt(squares.cast("double")).cast("float").cast("double")
    vector = F.when(
        norm > 0, F.transform(F.col("_counts"), lambda c: (c.cast("double") / norm).cast("float"))
    ).otherwise(F.array_repeat(F.lit(0.0).cast("float"), TITLE_DIMENSIONS))
    return articles.select("article_id", counts.alias("_counts")).select(
        "article_id", vector.alias("_vector")
    )


def _dot(a: Column, b: Column) -> Column:
    """sum over d of a[d] * b[d] in float64, added in dimension order."""
    from pyspark.sql import functions as F

    products = F.zip_with(a, b, lambda x, y: x.cast("double") * y.cast("double"))
    return F.aggregate(products, F.lit(0.0).cast("double"), lambda acc, p: acc + p)


def _title_similarity(table: DataFrame, vectors: DataFrame) -> DataFrame:
    """(impression_id, article_id, title_similarity) of every pair in `table`:
    build._title_similarity, the cosine between the candidate's title vector
    and the sum of the reader's last RECENT_READS clicked titles strictly
    before the impression; NaN without such clicks."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # The reader's clicks in reading order (time, then article id, as
    # semantic.last_clicks numbers them), each with the sum of its own and up
    # to RECENT_READS - 1 earlier clicks' vectors.
    reading = Window.partitionBy("user_id").orderBy("_t", "article_id")
    clicks = (
        table.filter(F.col("clicked") == 1)
        .select("user_id", "_t", "article_id")
        .join(vectors, on="article_id", how="left")
        .withColumn("_n", F.row_number().over(reading))
        .withColumn(
            "_recent",
            F.collect_list("_vector").over(reading.rowsBetween(-(RECENT_READS - 1), 0)),
        )
    )
    zero = F.array_repeat(F.lit(0.0).cast("double"), TITLE_DIMENSIONS)
    summed = F.aggregate(
        F.col("_recent"),
        zero,
        lambda acc, v: F.zip_with(acc, v, lambda a, b: a + b.cast("double")),
    )
    profiles = clicks.select("user_id", "_n", summed.alias("_profile"))
    norm = F.sqrt(_dot(F.col("_profile"), F.col("_profile")))
    profiles = profiles.select(
        "user_id",
        "_n",
        F.when(norm > 0, F.transform(F.col("_profile"), lambda p: p / norm))
        .otherwise(F.col("_profile"))
        .alias("_profile"),
    )

    # For each page view, how many of the reader's clicks came strictly before it.
    impressions = table.groupBy("impression_id").agg(
        F.first("user_id").alias("user_id"), F.first("_t").alias("_t")
    )
    seen = _counts_before(
        impressions,
        clicks.select("user_id", "_t", F.lit(1).alias("clicked")),
        ["user_id"],
        "_t",
        "_read",
    ).select("impression_id", "user_id", F.col("_read_shows").alias("_n"))
    profile_of = seen.join(profiles, on=["user_id", "_n"], how="left").select(
        "impression_id", "_n", "_profile"
    )
    similarity = F.when(F.col("_n") == 0, F.lit(float("nan"))).otherwise(
        _dot(F.col("_profile"), F.col("_vector"))
    )
    # A function of the page view and the article alone, so duplicate rows
    # of a pair share it.
    return (
        table.select("impression_id", "article_id")
        .distinct()
        .join(profile_of, on="impression_id", how="left")
        .join(vectors, on="article_id", how="left")
        .select("impression_id", "article_id", similarity.cast("float").alias("title_similarity"))
    )


def build_features(impressions: DataFrame, articles: DataFrame) -> DataFrame:
    """build.build_features on Spark: one row per shown candidate with
    LABEL_COLUMNS, true_utility (when the log has it) and FEATURE_NAMES as
    float, ordered by impression_id and position. An intermediate table is
    persisted: `spark.catalog.clearCache()` frees it after the write."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    impressions = impressions.withColumn("_t", _micros(impressions, "time"))
    arts = articles.select(
        "article_id",
        "category",
        "subcategory",
        _micros(articles, "publish_time").alias("_publish"),
        "word_count",
        "breaking",
    )
    rows = impressions.join(arts, on="article_id", how="left")
    events = rows.select(
        "user_id",
        "article_id",
        "category",
        "subcategory",
        "_t",
        F.coalesce(F.col("clicked"), F.lit(0)).alias("clicked"),
    )

    # Reader and moment: one row per impression.
    per_impression = rows.groupBy("impression_id").agg(
        F.first("user_id").alias("user_id"),
        F.first("_t").alias("_t"),
        F.first("device").alias("device"),
    )
    visits = (
        per_impression.select("user_id", "_t")
        .distinct()
        .withColumn("_visit", F.lag("_t").over(Window.partitionBy("user_id").orderBy("_t")))
    )
    user = _counts_before(per_impression, events, ["user_id"], "_t", "user")
    context = user.join(visits, on=["user_id", "_t"], how="left").select(
        "impression_id",
        F.expr(f"pmod(_t, {_MICROS_PER_DAY}) div {_MICROS_PER_HOUR}")
        .cast("float")
        .alias("hour_of_day"),
        F.expr(
            f"pmod((_t - pmod(_t, {_MICROS_PER_DAY})) div {_MICROS_PER_DAY} + {_EPOCH_WEEKDAY}, 7)"
        )
        .cast("float")
        .alias("day_of_week"),
        _device_code(F.col("device")).alias("device_code"),
        F.col("user_shows").cast("float").alias("user_prior_impressions"),
        F.col("user_clicks").cast("float").alias("user_prior_clicks"),
        _smoothed_ctr(F.col("user_clicks"), F.col("user_shows")).alias("user_prior_ctr"),
        (F.col("user_shows") == 0).cast("float").alias("user_is_cold_start"),
        _hours("_t", "_visit").alias("user_hours_since_last_visit"),
    )
    assert tuple(context.columns[1:]) == CONTEXT_FEATURES

    # Article popularity, overall and in the last hour and day: one union of
    # three queries per (impression, article), one window pass.
    short_hours, long_hours = ARTICLE_WINDOWS_HOURS
    keyed = rows.select("impression_id", "article_id", "_t").distinct()
    offsets = {"all": 0, "1h": short_hours, "24h": long_hours}
    queries = keyed.withColumn(
        "_window",
        F.explode(
            F.array(
                *(
                    F.struct(F.lit(name).alias("name"), F.lit(hours).alias("hours"))
                    for name, hours in offsets.items()
                )
            )
        ),
    ).select(
        "impression_id",
        "article_id",
        F.col("_window.name").alias("_window"),
        (F.col("_t") - F.col("_window.hours") * _MICROS_PER_HOUR).alias("_q"),
    )
    counted = _counts_before(queries, events, ["article_id"], "_q", "a")
    article = counted.groupBy("impression_id", "article_id").agg(
        *(
            F.max(F.when(F.col("_window") == name, F.col(f"a_{what}"))).alias(f"a_{name}_{what}")
            for name in offsets
            for what in ("shows", "clicks")
        )
    )
    imps_24h = F.col("a_all_shows") - F.col("a_24h_shows")
    clicks_24h = F.col("a_all_clicks") - F.col("a_24h_clicks")
    article = article.select(
        "impression_id",
        "article_id",
        (F.col("a_all_shows") - F.col("a_1h_shows")).cast("float").alias("article_impressions_1h"),
        (F.col("a_all_clicks") - F.col("a_1h_clicks")).cast("float").alias("article_clicks_1h"),
        imps_24h.cast("float").alias("article_impressions_24h"),
        clicks_24h.cast("float").alias("article_clicks_24h"),
        _smoothed_ctr(clicks_24h, imps_24h).alias("article_ctr_24h"),
        # Never shown before: missing, not zero (build.py).
        F.when(F.col("a_all_shows") > 0, F.col("a_all_clicks") / F.col("a_all_shows"))
        .cast("float")
        .alias("article_prior_ctr"),
    )

    # The reader's history with the candidate's category and subcategory.
    taste = rows.select("impression_id", "article_id", "user_id", "category", "subcategory", "_t")
    uc, us = ["user_id", "category"], ["user_id", "subcategory"]
    taste = _counts_before(taste, events, uc, "_t", "uc")
    taste = _counts_before(taste, events, us, "_t", "us")
    taste = taste.select(
        "impression_id",
        "article_id",
        F.col("uc_shows").cast("float").alias("user_category_prior_impressions"),
        _smoothed_ctr(F.col("uc_clicks"), F.col("uc_shows")).alias("user_category_ctr"),
        _smoothed_ctr(F.col("us_clicks"), F.col("us_shows")).alias("user_subcategory_ctr"),
    )

    table = (
        rows.join(context, on="impression_id", how="left")
        .join(article, on=["impression_id", "article_id"], how="left")
        .join(taste, on=["impression_id", "article_id"], how="left")
        .withColumn("article_age_hours", _hours("_t", "_publish"))
        .withColumn("article_word_count", F.col("word_count").cast("float"))
        .withColumn("article_breaking", F.col("breaking").cast("float"))
        # Read four times (the title similarity takes its clicks, page views
        # and pairs from it): kept, not recomputed with every window above.
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    similarity = _title_similarity(table, _title_vectors(articles))
    extra = [c for c in ("true_utility",) if c in impressions.columns]
    return (
        table.join(similarity, on=["impression_id", "article_id"], how="left")
        .select(*LABEL_COLUMNS, *extra, *FEATURE_NAMES)
        .orderBy("impression_id", "position")
    )


def _check_catalog(impressions: DataFrame, articles: DataFrame, location: str) -> None:
    """Every shown article must be in the catalog: build.py cannot describe
    one that is not (it has no title, category or publish time)."""
    from pyspark.sql import functions as F

    unknown = (
        impressions.select("article_id")
        .distinct()
        .join(articles.select("article_id"), on="article_id", how="left_anti")
    )
    found = unknown.orderBy("article_id").limit(1).collect()
    if found:
        count = unknown.agg(F.count(F.lit(1))).collect()[0][0]
        raise ValueError(
            f"{location}: {count:,} article_id values are not in {ARTICLES_FILE} "
            f"(e.g. {found[0]['article_id']})"
        )


def read_click_log(spark: SparkSession, data: str | Path) -> tuple[DataFrame, DataFrame]:
    """(impressions, articles) of a click-log directory, checked like
    `ranker.data.schema.validate_click_log` checks the columns."""
    impressions_at = _location(data, IMPRESSIONS_FILE)
    impressions = _read(spark, impressions_at, REQUIRED_IMPRESSION_COLUMNS)
    articles = _read(spark, _location(data, ARTICLES_FILE), REQUIRED_ARTICLE_COLUMNS)
    _check_catalog(impressions, articles, impressions_at)
    return impressions, articles


def write_feature_table(spark: SparkSession, data: str | Path, out: str | Path) -> None:
    """The feature table of a click-log directory as Parquet part files in
    the directory `out` (replaced), in (impression_id, position) order."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    impressions, articles = read_click_log(spark, data)
    try:
        build_features(impressions, articles).write.mode("overwrite").parquet(str(out))
    except (PySparkException, Py4JJavaError) as err:
        raise ValueError(f"{data}: the Spark feature pipeline failed: {_first_line(err)}") from None
    finally:
        spark.catalog.clearCache()


def feature_table(data: Path, options: SparkOptions, scratch: Path | None = None) -> pl.DataFrame:
    """build.feature_table on Spark. The executors write the table as part
    files under `scratch` (default: inside the click-log directory, which
    they already share with the driver), and the driver reads it back."""
    with (
        spark_session(options) as spark,
        tempfile.TemporaryDirectory(
            prefix=".ranker-spark-features-", dir=scratch or data
        ) as scratch_dir,
    ):
        parts = Path(scratch_dir) / "table"
        write_feature_table(spark, data, parts)
        return read_parts(parts)


def read_parts(directory: Path) -> pl.DataFrame:
    """The part files Spark wrote, as one polars frame in their order."""
    files = sorted(directory.glob("part-*.parquet"))
    if not files:
        raise ValueError(f"{directory}: Spark wrote no Parquet part files")
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")
