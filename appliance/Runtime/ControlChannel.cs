using System.Net.Sockets;
using System.Text;

namespace SecureVmm.Appliance.Runtime;

/// <summary>
/// The running appliance's control socket: a Unix domain socket, readable and writable only by the
/// user who runs the appliance (directory 0700, socket 0600). One request per connection, one line
/// of text: <c>status</c>, <c>stop</c> (every VM) or <c>stop NAME</c>; the answer is text, and its
/// first line is <c>ok</c> or <c>error: ...</c>. Requests are at most 256 bytes; anything else is refused.
/// </summary>
public sealed class ControlServer : IDisposable
{
    private const int MaxRequestBytes = 256;
    private readonly Socket _listener;
    private readonly Func<string, string> _handle;
    private readonly Thread _thread;
    private volatile bool _stopping;

    private ControlServer(string path, Socket listener, Func<string, string> handle)
    {
        Path = path;
        _listener = listener;
        _handle = handle;
        _thread = new Thread(Serve) { IsBackground = true, Name = "control socket" };
    }

    public string Path { get; }

    /// <summary>The default socket: $XDG_RUNTIME_DIR/securevmm/control.sock, else /run/securevmm (root) or /tmp/securevmm-UID.</summary>
    public static string DefaultPath()
    {
        string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        if (!string.IsNullOrEmpty(runtime))
        {
            return System.IO.Path.Combine(runtime, "securevmm", "control.sock");
        }
        string user = Environment.UserName;
        return user == "root" ? "/run/securevmm/control.sock" : System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"securevmm-{user}", "control.sock");
    }

    /// <summary>Listens at <paramref name="path"/>. Refuses when another appliance is already answering there.</summary>
    public static ControlServer Start(string path, Func<string, string> handle)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new ApplianceException("the control socket needs a Unix host");
        }
        string full = System.IO.Path.GetFullPath(path);
        string directory = System.IO.Path.GetDirectoryName(full)!;
        if (!Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        if (File.Exists(full))
        {
            if (ControlClient.TrySend(full, "ping", out _))
            {
                throw new ApplianceException($"control socket {full}: another appliance is running there (stop it, or pass --control PATH)");
            }
            File.Delete(full); // left behind by an appliance that did not end cleanly
        }
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(full));
            File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(8);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new ApplianceException($"control socket {full}: {e.Message}");
        }
        var server = new ControlServer(full, listener, handle);
        server._thread.Start();
        return server;
    }

    private void Serve()
    {
        while (!_stopping)
        {
            Socket client;
            try
            {
                client = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }
            using (client)
            {
                try
                {
                    client.ReceiveTimeout = 2000;
                    client.SendTimeout = 2000;
                    string reply = ReadRequest(client) is { } request ? Answer(request) : "error: a request is one line of at most 256 bytes\n";
                    client.Send(Encoding.UTF8.GetBytes(reply));
                }
                catch (SocketException)
                {
                    // The client went away; nothing to answer.
                }
            }
        }
    }

    private string Answer(string request)
    {
        if (request == "ping")
        {
            return "ok\n";
        }
        try
        {
            return _handle(request);
        }
        catch (ApplianceException e)
        {
            return "error: " + e.Message + "\n";
        }
    }

    private static string? ReadRequest(Socket client)
    {
        var buffer = new byte[MaxRequestBytes + 1];
        int length = 0;
        while (length < buffer.Length)
        {
            int n = client.Receive(buffer, length, buffer.Length - length, SocketFlags.None);
            if (n == 0)
            {
                break;
            }
            length += n;
            int newline = Array.IndexOf(buffer, (byte)'\n', 0, length);
            if (newline >= 0)
            {
                length = newline;
                break;
            }
        }
        if (length > MaxRequestBytes)
        {
            return null;
        }
        string text = Encoding.UTF8.GetString(buffer, 0, length).Trim();
        return text.All(c => c >= ' ' && c < 0x7F) ? text : null;
    }

    public void Dispose()
    {
        _stopping = true;
        _listener.Dispose();
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>Sends one request to a running appliance's control socket.</summary>
public static class ControlClient
{
    public static bool TrySend(string path, string request, out string reply)
    {
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.ReceiveTimeout = 30_000;
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.Send(Encoding.UTF8.GetBytes(request + "\n"));
            socket.Shutdown(SocketShutdown.Send);
            var received = new MemoryStream();
            var buffer = new byte[4096];
            int n;
            while ((n = socket.Receive(buffer)) > 0)
            {
                received.Write(buffer, 0, n);
            }
            reply = Encoding.UTF8.GetString(received.GetBuffer(), 0, (int)received.Length);
            return true;
        }
        catch (SocketException e)
        {
            reply = e.Message;
            return false;
        }
    }
}
