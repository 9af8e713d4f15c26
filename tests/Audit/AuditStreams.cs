namespace SecureVmm.Tests.Audit;

/// <summary>A memory stream that fails like a full disk once <paramref name="capacity"/> bytes are written
/// (a partial write, then ENOSPC), or on flush when <see cref="FailNow"/> is set.</summary>
internal sealed class FailingStream(long capacity) : MemoryStream
{
    public volatile bool FailNow;

    // MemoryStream's span overload calls back into the array overload for derived types, so all
    // writes funnel through this one.
    public override void Write(byte[] buffer, int offset, int count)
    {
        long room = capacity - Length;
        if (FailNow || room < count)
        {
            if (room > 0 && !FailNow)
            {
                base.Write(buffer, offset, (int)room);
            }
            throw new IOException("No space left on device");
        }
        base.Write(buffer, offset, count);
    }

    public override void Write(ReadOnlySpan<byte> buffer) => Write(buffer.ToArray(), 0, buffer.Length);

    public override void Flush()
    {
        if (FailNow)
        {
            throw new IOException("Input/output error");
        }
        base.Flush();
    }
}

/// <summary>A stream whose writes wait until the test opens the gate: a disk that cannot keep up.</summary>
internal sealed class GatedStream : MemoryStream
{
    public readonly ManualResetEventSlim Gate = new(false);

    public override void Write(byte[] buffer, int offset, int count)
    {
        Gate.Wait();
        base.Write(buffer, offset, count);
    }

    public override void Write(ReadOnlySpan<byte> buffer) => Write(buffer.ToArray(), 0, buffer.Length);

    protected override void Dispose(bool disposing)
    {
        // The gate stays usable: the writer disposes the stream at close while the test still holds it.
        base.Dispose(disposing);
    }
}
