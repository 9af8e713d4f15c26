using SecureVmm.NetFilter.Capture;

namespace SecureVmm.NetFilter.Backends;

/// <summary>
/// A network that is a capture file: every frame sent is written to a pcapng file (comment
/// "out sent"), nothing is received. For capturing everything a real backend carries, with the
/// filter's verdicts, give a <see cref="PcapNgWriter"/> to <see cref="Link"/> as its capture instead.
/// </summary>
public sealed class PcapBackend : INetworkBackend
{
    private readonly PcapNgWriter _writer;
    private readonly string _path;

    public PcapBackend(string path, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        _path = path;
        try
        {
            _writer = PcapNgWriter.Create(path, "securevmm-pcap", time);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new NetworkBackendException($"pcap backend: cannot create {path}: {e.Message}", e);
        }
    }

    public string Description => $"pcap {_path}";

    public long SendErrors => 0;

    public long Frames => _writer.Frames;

    public void Send(ReadOnlySpan<byte> frame) => _writer.Write(FrameDirection.Outbound, frame, "out sent"u8);

    public void Start(FrameHandler onReceive) => ArgumentNullException.ThrowIfNull(onReceive);

    public void Flush() => _writer.Flush();

    public void Dispose() => _writer.Dispose();
}
