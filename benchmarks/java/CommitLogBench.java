/*
 * Decode throughput of Cassandra's own commit-log reader, for benchmarks/decode_throughput.py.
 *
 * Our own harness around org.apache.cassandra.db.commitlog.CommitLogReader (cassandra-all, the
 * same jars the local stack runs). Compiled at benchmark time with javac against
 * .stack/cache/cassandra-5.0.9/lib; no class file is committed.
 *
 * Usage (the Python driver sets all of this up):
 *   java <Java 17 flags> -Dcassandra.config=file:///.../cassandra.yaml \
 *        -Dcassandra.storagedir=... -Dlogback.configurationFile=... \
 *        -cp <classes>:<lib>/* CommitLogBench <segments dir> [--warmup N] [--passes N]
 *
 * The yaml must point data_file_directories at a COPY of a node's system_schema sstables: the
 * reader needs each table's metadata to deserialize a mutation, and the least invasive way to
 * get it is the one Cassandra's offline tools use: DatabaseDescriptor.toolInitialization(),
 * then Schema.instance.loadFromDisk() (which reads system_schema from those sstables).
 *
 * Timed: CommitLogReader.readCommitLogSegment over every segment: framing, CRCs, full Mutation
 * deserialization (rows into B-trees), PartitionUpdate.validate(), then in the handler a walk
 * over every row, cell, complex cell, range tombstone and partition deletion, composing every
 * partition key component, clustering value, cell path and cell value into its Java object
 * (AbstractType.compose), the equivalent of what the Python decoder does with each value.
 * Not timed: JVM start, schema loading, listing the files.
 *
 * Output: progress on stderr; one JSON object on the last line of stdout.
 */

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.cassandra.config.DatabaseDescriptor;
import org.apache.cassandra.db.Clustering;
import org.apache.cassandra.db.DeletionTime;
import org.apache.cassandra.db.Mutation;
import org.apache.cassandra.db.RangeTombstone;
import org.apache.cassandra.db.commitlog.CommitLogDescriptor;
import org.apache.cassandra.db.commitlog.CommitLogPosition;
import org.apache.cassandra.db.commitlog.CommitLogReadHandler;
import org.apache.cassandra.db.commitlog.CommitLogReader;
import org.apache.cassandra.db.marshal.AbstractType;
import org.apache.cassandra.db.marshal.CollectionType;
import org.apache.cassandra.db.marshal.CompositeType;
import org.apache.cassandra.db.marshal.UserType;
import org.apache.cassandra.db.partitions.PartitionUpdate;
import org.apache.cassandra.db.rows.Cell;
import org.apache.cassandra.db.rows.ColumnData;
import org.apache.cassandra.db.rows.ComplexColumnData;
import org.apache.cassandra.db.rows.Row;
import org.apache.cassandra.io.util.File;
import org.apache.cassandra.schema.ColumnMetadata;
import org.apache.cassandra.schema.KeyspaceMetadata;
import org.apache.cassandra.schema.Schema;
import org.apache.cassandra.schema.TableMetadata;

public final class CommitLogBench
{
    /** What one pass saw; compared between passes to prove they did the same work. */
    static final class Counts
    {
        long mutations, mutationBytes, updates, rows, staticRows, cells, complexCells;
        long rangeTombstones, partitionDeletions, rowDeletions, values, composeFailures;
        long checksum; // folds every composed value's hash: keeps the JIT from dropping the work
        final Map<String, Long> mutationsByKeyspace = new TreeMap<>();
        // Per keyspace: rows + static rows + range tombstones + partition deletions, i.e. what
        // the Python decoder turns into one change event each.
        final Map<String, Long> changesByKeyspace = new TreeMap<>();
        final List<String> errors = new ArrayList<>();
    }

    static final class Handler implements CommitLogReadHandler
    {
        final Counts c = new Counts();

        @Override
        public boolean shouldSkipSegmentOnError(CommitLogReadException e)
        {
            c.errors.add(e.reason + ": " + e.getMessage());
            return true; // skip the rest of that segment, go on with the next one
        }

        @Override
        public void handleUnrecoverableError(CommitLogReadException e)
        {
            c.errors.add(e.reason + " (unrecoverable): " + e.getMessage());
        }

        @Override
        public void handleMutation(Mutation m, int size, int entryLocation, CommitLogDescriptor desc)
        {
            c.mutations++;
            c.mutationBytes += size;
            c.mutationsByKeyspace.merge(m.getKeyspaceName(), 1L, Long::sum);
            for (PartitionUpdate update : m.getPartitionUpdates())
                walk(update);
        }

        private void walk(PartitionUpdate update)
        {
            c.updates++;
            TableMetadata table = update.metadata();
            long changesBefore = c.rows + c.staticRows + c.rangeTombstones + c.partitionDeletions;
            partitionKey(table, update.partitionKey().getKey());

            DeletionTime partitionDeletion = update.partitionLevelDeletion();
            if (!partitionDeletion.isLive())
            {
                c.partitionDeletions++;
                fold(partitionDeletion.markedForDeleteAt());
            }
            Iterator<RangeTombstone> ranges = update.deletionInfo().rangeIterator(false);
            while (ranges.hasNext())
            {
                RangeTombstone rt = ranges.next();
                c.rangeTombstones++;
                clustering(table, rt.deletedSlice().start());
                clustering(table, rt.deletedSlice().end());
                fold(rt.deletionTime().markedForDeleteAt());
            }

            Row statics = update.staticRow();
            if (statics != null && !statics.isEmpty())
            {
                c.staticRows++;
                row(table, statics);
            }
            for (Row row : update)
            {
                c.rows++;
                clustering(table, row.clustering());
                row(table, row);
            }
            long changes = c.rows + c.staticRows + c.rangeTombstones + c.partitionDeletions - changesBefore;
            c.changesByKeyspace.merge(table.keyspace, changes, Long::sum);
        }

        private void row(TableMetadata table, Row row)
        {
            if (!row.deletion().isLive())
            {
                c.rowDeletions++;
                fold(row.deletion().time().markedForDeleteAt());
            }
            fold(row.primaryKeyLivenessInfo().timestamp());
            for (ColumnData data : row)
            {
                ColumnMetadata column = data.column();
                if (column.isComplex())
                {
                    ComplexColumnData complex = (ComplexColumnData) data;
                    c.complexCells++;
                    fold(complex.complexDeletion().markedForDeleteAt());
                    for (Cell<?> cell : complex)
                        complexCell(column.type, cell);
                }
                else
                {
                    Cell<?> cell = (Cell<?>) data;
                    c.cells++;
                    fold(cell.timestamp() ^ cell.ttl() ^ cell.localDeletionTime());
                    if (!cell.isCounterCell())
                        compose(column.type, cell.buffer());
                }
            }
        }

        private void complexCell(AbstractType<?> type, Cell<?> cell)
        {
            c.cells++;
            fold(cell.timestamp() ^ cell.ttl() ^ cell.localDeletionTime());
            ByteBuffer path = cell.path().get(0);
            if (type instanceof CollectionType)
            {
                CollectionType<?> collection = (CollectionType<?>) type;
                compose(collection.nameComparator(), path);
                if (cell.valueSize() > 0)
                    compose(collection.valueComparator(), cell.buffer());
            }
            else if (type instanceof UserType)
            {
                UserType udt = (UserType) type;
                int field = path.getShort(path.position());
                fold(field);
                if (field >= 0 && field < udt.size() && cell.valueSize() > 0)
                    compose(udt.fieldType(field), cell.buffer());
            }
            else
            {
                fold(path.hashCode());
                fold(cell.buffer().hashCode());
            }
        }

        private void partitionKey(TableMetadata table, ByteBuffer key)
        {
            AbstractType<?> type = table.partitionKeyType;
            if (type instanceof CompositeType)
            {
                CompositeType composite = (CompositeType) type;
                ByteBuffer[] parts = composite.split(key);
                for (int i = 0; i < parts.length; i++)
                    compose(composite.types.get(i), parts[i]);
            }
            else
            {
                compose(type, key);
            }
        }

        private void clustering(TableMetadata table, org.apache.cassandra.db.ClusteringPrefix<?> prefix)
        {
            if (prefix.kind() == Clustering.STATIC_CLUSTERING.kind())
                return;
            for (int i = 0; i < prefix.size(); i++)
            {
                ByteBuffer value = prefix.bufferAt(i);
                if (value != null)
                    compose(table.comparator.subtype(i), value);
            }
        }

        private void compose(AbstractType<?> type, ByteBuffer value)
        {
            c.values++;
            try
            {
                Object composed = type.compose(value);
                fold(composed == null ? 0 : composed.hashCode());
            }
            catch (RuntimeException e)
            {
                c.composeFailures++;
            }
        }

        private void fold(long v)
        {
            c.checksum = c.checksum * 31 + v;
        }
    }

    public static void main(String[] args) throws Exception
    {
        if (args.length < 1)
        {
            System.err.println("usage: CommitLogBench <segments dir> [--warmup N] [--passes N]");
            System.exit(2);
        }
        java.io.File dir = new java.io.File(args[0]);
        int warmup = 2, passes = 5;
        for (int i = 1; i < args.length; i++)
        {
            if (args[i].equals("--warmup")) warmup = Integer.parseInt(args[++i]);
            else if (args[i].equals("--passes")) passes = Integer.parseInt(args[++i]);
            else throw new IllegalArgumentException("unknown argument " + args[i]);
        }

        java.io.File[] found = dir.listFiles((d, name) -> name.startsWith("CommitLog-") && name.endsWith(".log"));
        if (found == null || found.length == 0)
            throw new IllegalArgumentException("no CommitLog-*.log in " + dir);
        Arrays.sort(found, (a, b) -> Long.compare(segmentId(a.getName()), segmentId(b.getName())));
        File[] segments = new File[found.length];
        long fileBytes = 0;
        for (int i = 0; i < found.length; i++)
        {
            segments[i] = new File(found[i]);
            fileBytes += found[i].length();
        }

        long t0 = System.nanoTime();
        DatabaseDescriptor.toolInitialization();
        Schema.instance.loadFromDisk();
        double schemaSeconds = (System.nanoTime() - t0) / 1e9;
        List<String> keyspaces = new ArrayList<>();
        for (KeyspaceMetadata ks : Schema.instance.distributedKeyspaces())
            keyspaces.add(ks.name + "(" + ks.tables.size() + ")");
        System.err.printf("schema loaded from disk in %.2f s: %s%n", schemaSeconds, keyspaces);

        // Wall time is what the benchmark reports; the reading thread's CPU time is reported too,
        // as it is far less disturbed by other processes on a shared machine (it leaves out the
        // JIT compiler's and the garbage collector's own threads).
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        List<Double> seconds = new ArrayList<>();
        List<Double> cpuSeconds = new ArrayList<>();
        Counts first = null;
        Map<String, Integer> unknownTables = new TreeMap<>();
        for (int pass = 0; pass < warmup + passes; pass++)
        {
            Handler handler = new Handler();
            CommitLogReader reader = new CommitLogReader();
            long cpuStart = threads.getCurrentThreadCpuTime();
            long start = System.nanoTime();
            for (File segment : segments)
                reader.readCommitLogSegment(handler, segment, CommitLogPosition.NONE, CommitLogReader.ALL_MUTATIONS, false);
            double elapsed = (System.nanoTime() - start) / 1e9;
            double cpu = (threads.getCurrentThreadCpuTime() - cpuStart) / 1e9;
            Counts c = handler.c;
            System.err.printf("pass %d%s: %d mutations in %.3f s (thread CPU %.3f s)%n", pass + 1,
                              pass < warmup ? " (warm-up)" : "", c.mutations, elapsed, cpu);
            if (first == null)
            {
                first = c;
                for (Map.Entry<?, ? extends Number> e : reader.getInvalidMutations())
                    unknownTables.put(e.getKey().toString(), e.getValue().intValue());
            }
            else if (c.mutations != first.mutations || c.checksum != first.checksum)
            {
                throw new IllegalStateException("pass " + (pass + 1) + " saw different data than pass 1");
            }
            if (pass >= warmup)
            {
                seconds.add(elapsed);
                cpuSeconds.add(cpu);
            }
        }

        Counts c = first;
        long unknown = 0;
        StringBuilder unknownJson = new StringBuilder("{");
        for (Map.Entry<String, Integer> e : unknownTables.entrySet())
        {
            unknown += e.getValue();
            if (unknownJson.length() > 1) unknownJson.append(", ");
            unknownJson.append('"').append(e.getKey()).append("\": ").append(e.getValue());
        }
        unknownJson.append('}');
        StringBuilder byKeyspace = new StringBuilder("{");
        for (Map.Entry<String, Long> e : c.mutationsByKeyspace.entrySet())
        {
            if (byKeyspace.length() > 1) byKeyspace.append(", ");
            byKeyspace.append('"').append(e.getKey()).append("\": ").append(e.getValue());
        }
        byKeyspace.append('}');
        StringBuilder changesByKeyspace = new StringBuilder("{");
        for (Map.Entry<String, Long> e : c.changesByKeyspace.entrySet())
        {
            if (changesByKeyspace.length() > 1) changesByKeyspace.append(", ");
            changesByKeyspace.append('"').append(e.getKey()).append("\": ").append(e.getValue());
        }
        changesByKeyspace.append('}');
        StringBuilder errors = new StringBuilder("[");
        for (String e : c.errors)
        {
            if (errors.length() > 1) errors.append(", ");
            errors.append('"').append(e.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
        }
        errors.append(']');
        StringBuilder secs = new StringBuilder("[");
        for (double s : seconds)
        {
            if (secs.length() > 1) secs.append(", ");
            secs.append(String.format("%.6f", s));
        }
        secs.append(']');
        StringBuilder cpuSecs = new StringBuilder("[");
        for (double s : cpuSeconds)
        {
            if (cpuSecs.length() > 1) cpuSecs.append(", ");
            cpuSecs.append(String.format("%.6f", s));
        }
        cpuSecs.append(']');

        System.out.println(String.format(
            "{\"java\": \"%s\", \"files\": %d, \"file_bytes\": %d, \"schema_seconds\": %.3f, " +
            "\"warmup_passes\": %d, \"seconds\": %s, \"cpu_seconds\": %s, \"mutations\": %d, \"mutation_bytes\": %d, " +
            "\"updates\": %d, \"rows\": %d, \"static_rows\": %d, \"cells\": %d, \"complex_cells\": %d, " +
            "\"range_tombstones\": %d, \"partition_deletions\": %d, \"row_deletions\": %d, " +
            "\"values\": %d, \"compose_failures\": %d, \"checksum\": %d, " +
            "\"unknown_table_mutations\": %d, \"unknown_tables\": %s, " +
            "\"mutations_by_keyspace\": %s, \"changes_by_keyspace\": %s, \"errors\": %s}",
            System.getProperty("java.version"), segments.length, fileBytes, schemaSeconds, warmup, secs, cpuSecs,
            c.mutations, c.mutationBytes, c.updates, c.rows, c.staticRows, c.cells, c.complexCells,
            c.rangeTombstones, c.partitionDeletions, c.rowDeletions, c.values, c.composeFailures,
            c.checksum, unknown, unknownJson, byKeyspace, changesByKeyspace, errors));
        System.out.flush();
        // Cassandra's tool initialisation leaves non-daemon threads behind.
        System.exit(0);
    }

    private static long segmentId(String name)
    {
        // CommitLog-<version>-<id>.log
        String stem = name.substring(0, name.length() - ".log".length());
        return Long.parseLong(stem.substring(stem.lastIndexOf('-') + 1));
    }
}
