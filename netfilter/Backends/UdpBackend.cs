using System.Net;
using System.Net.Sockets;

namespace SecureVmm.NetFilter.Backends;

/// <summary>
/// Ethernet over UDP, wire-compatible with QEMU's <c>-netdev socket,udp=REMOTE:PORT,localaddr=LOCAL:PORT</c>:
/// each datagram is exactly one Ethernet frame with no header. The socket is bound to the local
/// address and connected to the remote one, so the kernel discards datagrams from anyone but the
/// peer (QEMU itself accepts from any sender; this is stricter).
/// </summary>
public sealed class UdpBackend : INetworkBackend
{
    private const int PollMicroseconds = 200_000;

    private readonly Socket _socket;
    private readonly byte[] _receiveBuffer = new byte[FilterConfig.AbsoluteMaxFrameBytes];
    private Thread? _receiver;
    private volatile bool _stopping;
    private long _sendErrors;
    private long _received;

    public UdpBackend(IPEndPoint local, IPEndPoint remote)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(remote);
        if (local.AddressFamily != remote.AddressFamily)
        {
            throw new NetworkBackendException($"udp backend: local {local} and remote {remote} are different address families");
        }
        _socket = new Socket(local.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            _socket.Bind(local);
            _socket.Connect(remote);
        }
        catch (SocketException e)
        {
            _socket.Dispose();
            throw new NetworkBackendException($"udp backend: cannot bind {local} and connect to {remote}: {e.Message}", e);
        }
        Local = (IPEndPoint)_socket.LocalEndPoint!;
        Remote = remote;
    }

    /// <summary>The bound local endpoint (with the real port when 0 was asked for).</summary>
    public IPEndPoint Local { get; }

    public IPEndPoint Remote { get; }

    public string Description => $"udp {Local} -> {Remote}";

    public long SendErrors => Interlocked.Read(ref _sendErrors);

    public long Received => Interlocked.Read(ref _received);

    public void Send(ReadOnlySpan<byte> frame)
    {
        try
        {
            if (_socket.Send(frame) != frame.Length)
            {
                Interlocked.Increment(ref _sendErrors);
            }
        }
        catch (SocketException)
        {
            // E.g. ECONNREFUSED reported for an earlier datagram while the peer is not up yet.
            Interlocked.Increment(ref _sendErrors);
        }
        catch (ObjectDisposedException)
        {
            Interlocked.Increment(ref _sendErrors);
        }
    }

    public void Start(FrameHandler onReceive)
    {
        ArgumentNullException.ThrowIfNull(onReceive);
        if (_receiver is not null)
        {
            throw new InvalidOperationException("udp backend already started");
        }
        _receiver = new Thread(() => ReceiveLoop(onReceive)) { IsBackground = true, Name = "udp backend " + Local };
        _receiver.Start();
    }

    private void ReceiveLoop(FrameHandler onReceive)
    {
        while (!_stopping)
        {
            int length;
            try
            {
                if (!_socket.Poll(PollMicroseconds, SelectMode.SelectRead))
                {
                    continue;
                }
                length = _socket.Receive(_receiveBuffer);
            }
            catch (SocketException)
            {
                // ICMP port unreachable from an earlier send surfaces here on a connected socket.
                continue;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            Interlocked.Increment(ref _received);
            onReceive(_receiveBuffer.AsSpan(0, length));
        }
    }

    public void Dispose()
    {
        _stopping = true;
        if (_receiver is not null && _receiver != Thread.CurrentThread)
        {
            _receiver.Join();
        }
        _socket.Dispose();
    }
}
