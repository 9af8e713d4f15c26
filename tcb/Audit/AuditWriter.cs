using System.Diagnostics;
using System.Security.Cryptography;

namespace SecureVmm.Tcb.Audit;

/// <summary>What <see cref="AuditWriter.Append"/> did with a record.</summary>
public enum AuditAppendStatus : byte
{
    /// <summary>Queued for the log; it will be written unless the writer fails later (poll <see cref="AuditWriter.Failed"/>).</summary>
    Accepted = 0,
    /// <summary>The log cannot be written: stop the VM (exit status 4). <see cref="AuditWriter.FailureReason"/> says why.</summary>
    Failed = 1,
    /// <summary>The writer was closed; nothing more can be recorded.</summary>
    Closed = 2,
}

/// <summary>Writer settings. Defaults suit an interactive appliance.</summary>
public sealed class AuditWriterOptions
{
    /// <summary>Records the bounded buffer holds; a full buffer makes Append wait (back-pressure, never drop).</summary>
    public int BufferCapacity { get; init; } = 16384;
    public int MaxBlockRecords { get; init; } = AuditFormat.DefaultMaxBlockRecords;
    public int MaxBlockPayloadBytes { get; init; } = AuditFormat.DefaultMaxBlockPayloadBytes;
    /// <summary>At this interval a partial block is closed, written, flushed and fsynced.</summary>
    public TimeSpan FlushInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>A signed checkpoint after this many records (0: only by time and at close).</summary>
    public long CheckpointEveryRecords { get; init; } = 1_000_000;
    /// <summary>A signed checkpoint after this much wall-clock time when records arrived since the last one (zero: never by time).</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromMinutes(1);
    /// <summary>The audit key; null writes unsigned checkpoints (dev boot without a key), which verify reports as unsigned.</summary>
    public IAuditSigner? Signer { get; init; }
    /// <summary>Wall clock for checkpoint times (Unix ns); injectable for reproducible tests.</summary>
    public Func<long>? WallClockUnixNs { get; init; }
}

/// <summary>
/// The audit log writer: the machine's exit dispatch point calls <see cref="Append"/> for every exit;
/// a dedicated thread encodes the records into hash-chained blocks, writes them, fsyncs on an interval
/// and signs checkpoints (docs/audit-format.md).
/// <para>Never lose a record: the buffer is bounded and Append waits when it is full. Fail secure
/// (like auditd's disk_full_action=halt): the first write or flush error puts the writer in the failed
/// state for good; every later Append returns <see cref="AuditAppendStatus.Failed"/> and the machine stops
/// the VM with exit status 4 and <see cref="FailureReason"/>. Records up to <see cref="DurableSequence"/>
/// were fsynced before the failure and stay in the file.</para>
/// Append allocates nothing and takes one uncontended lock.
/// </summary>
public sealed class AuditWriter : IDisposable
{
    private readonly string _name;
    private readonly AuditLogHeader _header;
    private readonly AuditWriterOptions _options;
    private readonly Stream _stream;
    private readonly AuditRecord[] _ring;
    private readonly object _gate = new();
    private readonly Thread _thread;
    private readonly byte[] _block;
    private readonly Func<long> _wallClock;
    private readonly int _vmCount;
    private readonly int _networkCount;

    // Guarded by _gate.
    private long _appended;          // records ever appended (ring tail)
    private long _released;          // records whose ring slots the writer thread has finished with (ring head)
    private ulong _nextSequence = 1;
    private bool _closing;
    private bool _consumerWaiting;
    private int _producersWaiting;
    private bool _flushRequested;
    private ulong _durableSequence;
    private volatile bool _failed;
    private string? _failureReason;

    // Writer thread only.
    private ulong _blockIndex;
    private Sha256Digest _chainHead;
    private int _blockPayload;
    private uint _blockRecords;
    private ulong _blockFirstSequence = 1;
    private ulong _blockPreviousTime;
    private ulong _lastWrittenSequence;
    private long _recordsSinceCheckpoint;
    private bool _anyRecordsSinceCheckpoint;

    private AuditWriter(string name, Stream stream, AuditLogHeader header, AuditWriterOptions options)
    {
        if (options.BufferCapacity < 1 || options.MaxBlockRecords is < 1 or > AuditFormat.MaxBlockRecordsLimit
            || options.MaxBlockPayloadBytes is < AuditFormat.MinBlockPayloadBytes or > AuditFormat.MaxBlockPayloadBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "audit writer: buffer capacity, block records or block size out of range");
        }
        _name = name;
        _stream = stream;
        _options = options;
        _header = new AuditLogHeader(header.LogId, header.CreatedUnixNs, header.VmNames, header.NetworkNames)
        {
            MaxBlockPayloadBytes = options.MaxBlockPayloadBytes,
            MaxBlockRecords = options.MaxBlockRecords,
        };
        _vmCount = header.VmNames.Count;
        _networkCount = header.NetworkNames.Count;
        _ring = new AuditRecord[options.BufferCapacity];
        _block = new byte[AuditFormat.BlockHeaderSize + options.MaxBlockPayloadBytes];
        _wallClock = options.WallClockUnixNs ?? (() => (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100);
        byte[] headerBytes = _header.Encode();
        _stream.Write(headerBytes);
        Fsync();
        SHA256.HashData(headerBytes, _chainHead);
        _thread = new Thread(WriterLoop) { IsBackground = true, Name = "audit writer" };
    }

    /// <summary>Creates a new log file (never overwrites one) and starts the writer.</summary>
    /// <exception cref="AuditLogException">The file cannot be created or its header written; the message names the file.</exception>
    public static AuditWriter Create(string path, AuditLogHeader header, AuditWriterOptions options) =>
        Open(path, () =>
        {
            // Unbuffered (each block is one write) and readable by owner and group only: the log shows what guests did.
            var file = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.Read, BufferSize = 0 };
            if (!OperatingSystem.IsWindows())
            {
                file.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
            }
            return new FileStream(path, file);
        }, header, options);

    /// <summary>Starts a writer on a stream from <paramref name="streamFactory"/> (tests inject failing or slow streams).</summary>
    /// <exception cref="AuditLogException">The stream cannot be opened or the header written; the message names <paramref name="name"/>.</exception>
    public static AuditWriter Open(string name, Func<Stream> streamFactory, AuditLogHeader header, AuditWriterOptions options)
    {
        Stream? stream = null;
        try
        {
            stream = streamFactory();
            var writer = new AuditWriter(name, stream, header, options);
            writer._thread.Start();
            return writer;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ObjectDisposedException)
        {
            stream?.Dispose();
            throw new AuditLogException($"{name}: cannot write the audit log: {e.Message}");
        }
    }

    public string Name => _name;
    public AuditLogHeader Header => _header;

    /// <summary>True once a write or flush failed; the VM must stop (exit status 4).</summary>
    public bool Failed => _failed;

    /// <summary>The file and the error, once <see cref="Failed"/>.</summary>
    public string? FailureReason
    {
        get
        {
            lock (_gate)
            {
                return _failureReason;
            }
        }
    }

    /// <summary>The sequence number of the last record appended (0 before the first).</summary>
    public ulong LastSequence
    {
        get
        {
            lock (_gate)
            {
                return _nextSequence - 1;
            }
        }
    }

    /// <summary>The last sequence number written and fsynced: those records survive a crash or a later failure.</summary>
    public ulong DurableSequence
    {
        get
        {
            lock (_gate)
            {
                return _durableSequence;
            }
        }
    }

    /// <summary>
    /// Queues one record (its <see cref="AuditRecord.Sequence"/> is assigned here). Waits while the buffer
    /// is full. Never returns <see cref="AuditAppendStatus.Accepted"/> once the writer has failed or closed.
    /// </summary>
    public AuditAppendStatus Append(in AuditRecord record)
    {
        if (record.VmId >= _vmCount || (record.Kind == AuditKind.FramesDropped && record.Network >= _networkCount)
            || !AuditKinds.IsDefined((byte)record.Kind))
        {
            // A caller bug, not guest input: the log header names every VM and network the machine may record.
            throw new ArgumentOutOfRangeException(nameof(record), "audit record names an unknown kind, VM or network");
        }
        lock (_gate)
        {
            while (true)
            {
                if (_failed)
                {
                    return AuditAppendStatus.Failed;
                }
                if (_closing)
                {
                    return AuditAppendStatus.Closed;
                }
                if (_appended - _released < _ring.Length)
                {
                    break;
                }
                _producersWaiting++;
                Monitor.Wait(_gate);
                _producersWaiting--;
            }
            ref AuditRecord slot = ref _ring[(int)(_appended % _ring.Length)];
            slot = record;
            slot.Sequence = _nextSequence++;
            _appended++;
            if (_consumerWaiting)
            {
                // Wake the writer thread once, not for every record that arrives before it runs.
                _consumerWaiting = false;
                Monitor.PulseAll(_gate);
            }
        }
        return AuditAppendStatus.Accepted;
    }

    /// <summary>
    /// Waits until every record appended so far is written and fsynced. True on success; false when the
    /// writer failed (records up to <see cref="DurableSequence"/> are durable).
    /// </summary>
    public bool Flush()
    {
        lock (_gate)
        {
            ulong target = _nextSequence - 1;
            while (_durableSequence < target && !_failed && _thread.IsAlive)
            {
                _flushRequested = true;
                Monitor.PulseAll(_gate);
                Monitor.Wait(_gate, 100);
            }
            return !_failed && _durableSequence >= target;
        }
    }

    /// <summary>
    /// Writes what is buffered, a final signed checkpoint, fsyncs and closes the file. True when the log
    /// was closed cleanly; false when the writer had failed (see <see cref="FailureReason"/>).
    /// </summary>
    public bool Close()
    {
        lock (_gate)
        {
            _closing = true;
            Monitor.PulseAll(_gate);
        }
        if (_thread.IsAlive && Thread.CurrentThread != _thread)
        {
            _thread.Join();
        }
        return !_failed;
    }

    public void Dispose() => Close();

    private void WriterLoop()
    {
        var sinceFlush = Stopwatch.StartNew();
        var sinceCheckpoint = Stopwatch.StartNew();
        long flushMs = Math.Max(1, (long)_options.FlushInterval.TotalMilliseconds);
        long checkpointMs = (long)_options.CheckpointInterval.TotalMilliseconds;
        try
        {
            while (true)
            {
                long start;
                long end;
                bool closing;
                bool flushRequested;
                lock (_gate)
                {
                    while (_appended == _released && !_closing && !_flushRequested)
                    {
                        long wait = flushMs - sinceFlush.ElapsedMilliseconds;
                        if (_blockRecords == 0 && _lastWrittenSequence == _durableSequence)
                        {
                            // Nothing is waiting for durability: sleep until a record or a request arrives,
                            // waking only for a due time-based checkpoint.
                            wait = checkpointMs > 0 && _anyRecordsSinceCheckpoint ? Math.Max(1, checkpointMs - sinceCheckpoint.ElapsedMilliseconds) : Timeout.Infinite;
                        }
                        if (wait != Timeout.Infinite && wait <= 0)
                        {
                            break;
                        }
                        _consumerWaiting = true;
                        bool signalled = Monitor.Wait(_gate, (int)Math.Min(wait, int.MaxValue));
                        _consumerWaiting = false;
                        if (!signalled)
                        {
                            break;
                        }
                    }
                    start = _released;
                    end = _appended;
                    closing = _closing;
                    flushRequested = _flushRequested;
                    _flushRequested = false;
                }

                for (long i = start; i < end; i++)
                {
                    ref readonly AuditRecord record = ref _ring[(int)(i % _ring.Length)];
                    if (_blockRecords == _options.MaxBlockRecords || _blockPayload + AuditFormat.MaxRecordBytes > _options.MaxBlockPayloadBytes)
                    {
                        SealBlock();
                        Release(i);
                    }
                    EncodeIntoBlock(in record);
                    if (_options.CheckpointEveryRecords > 0 && _recordsSinceCheckpoint >= _options.CheckpointEveryRecords)
                    {
                        // Exactly every N records, wherever batch boundaries fall.
                        SealBlock();
                        Release(i + 1);
                        WriteCheckpoint(final: false);
                        sinceCheckpoint.Restart();
                        MakeDurable();
                        sinceFlush.Restart();
                    }
                }
                Release(end);

                bool flushDue = flushRequested || closing || sinceFlush.ElapsedMilliseconds >= flushMs;
                bool checkpointDue = closing
                    || (checkpointMs > 0 && _anyRecordsSinceCheckpoint && sinceCheckpoint.ElapsedMilliseconds >= checkpointMs);
                if (checkpointDue)
                {
                    SealBlock();
                    WriteCheckpoint(closing);
                    sinceCheckpoint.Restart();
                }
                if (flushDue || checkpointDue)
                {
                    SealBlock();
                    MakeDurable();
                    sinceFlush.Restart();
                }
                if (closing)
                {
                    lock (_gate)
                    {
                        if (_appended == _released)
                        {
                            break;
                        }
                    }
                }
            }
            _stream.Dispose();
        }
#pragma warning disable CA1031 // Fail secure: whatever stops the log (I/O, signer, bug) must stop the VMs, not kill the process silently.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Fail(e.Message);
        }
    }

    /// <summary>fsync, then acknowledge everything written so far as durable.</summary>
    private void MakeDurable()
    {
        Fsync();
        lock (_gate)
        {
            _durableSequence = _lastWrittenSequence;
            Monitor.PulseAll(_gate);
        }
    }

    private void Release(long upTo)
    {
        lock (_gate)
        {
            if (upTo > _released)
            {
                _released = upTo;
                if (_producersWaiting > 0)
                {
                    Monitor.PulseAll(_gate);
                }
            }
        }
    }

    private void Fail(string message)
    {
        lock (_gate)
        {
            if (!_failed)
            {
                _failureReason = $"{_name}: audit log write failed: {message}";
                _failed = true;
            }
            Monitor.PulseAll(_gate);
        }
        try
        {
            _stream.Dispose();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
        {
            // The stream already failed; its close error adds nothing to the reason recorded above.
        }
    }

    private void EncodeIntoBlock(in AuditRecord record)
    {
        Span<byte> destination = _block.AsSpan(AuditFormat.BlockHeaderSize + _blockPayload);
        _blockPayload += AuditFormat.EncodeRecord(in record, record.Sequence - _blockFirstSequence, _blockPreviousTime, destination);
        _blockPreviousTime = record.VirtualTimeNs;
        _blockRecords++;
        _lastWrittenSequence = record.Sequence;
        _recordsSinceCheckpoint++;
        _anyRecordsSinceCheckpoint = true;
    }

    /// <summary>Closes the current records block, if any: header, hash into the chain, write.</summary>
    private void SealBlock()
    {
        if (_blockRecords == 0)
        {
            return;
        }
        WriteBlock(AuditBlockType.Records, _blockFirstSequence, _blockRecords, _blockPayload);
        _blockFirstSequence += _blockRecords;
        _blockRecords = 0;
        _blockPayload = 0;
        _blockPreviousTime = 0;
    }

    private void WriteBlock(AuditBlockType type, ulong firstSequence, uint records, int payloadLength)
    {
        var header = new AuditBlockHeader
        {
            Type = type,
            Index = _blockIndex,
            FirstSequence = firstSequence,
            RecordCount = records,
            PayloadLength = (uint)payloadLength,
            PreviousHash = _chainHead,
        };
        header.Write(_block);
        ReadOnlySpan<byte> block = _block.AsSpan(0, AuditFormat.BlockHeaderSize + payloadLength);
        _stream.Write(block);
        SHA256.HashData(block, _chainHead);
        _blockIndex++;
    }

    /// <summary>
    /// A checkpoint block: the audit key's signature over (log id, this block's index, last sequence,
    /// chain head, time, flags) so a rewritten chain fails verification without the key.
    /// </summary>
    private void WriteCheckpoint(bool final)
    {
        byte flags = final ? AuditFormat.CheckpointFinalFlag : (byte)0;
        long wall = _wallClock();
        ulong last = _blockFirstSequence - 1;
        byte[] signature = [];
        string keyId = "";
        if (_options.Signer is { } signer)
        {
            byte[] message = AuditFormat.CheckpointMessage(_header.LogId, _blockIndex, last, _chainHead, wall, flags);
            signature = signer.Sign(message);
            keyId = signer.KeyId;
        }
        int length = AuditFormat.EncodeCheckpointPayload(_block.AsSpan(AuditFormat.BlockHeaderSize), keyId, flags, last, wall, signature);
        WriteBlock(AuditBlockType.Checkpoint, _blockFirstSequence, 0, length);
        _recordsSinceCheckpoint = 0;
        _anyRecordsSinceCheckpoint = false;
    }

    private void Fsync()
    {
        if (_stream is FileStream file)
        {
            file.Flush(flushToDisk: true);
        }
        else
        {
            _stream.Flush();
        }
    }
}
