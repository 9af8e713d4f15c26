namespace SecureVmm.Tcb.Devices;

/// <summary>
/// One VM's virtual clock, in nanoseconds since the VM was created. Devices read it and never
/// the host clock (DESIGN.md, principle 5): the machine sets it, from retired instructions in
/// deterministic mode or from the host clock in realtime mode. It also keeps the VM's timed
/// devices, so that HLT can ask for the earliest deadline and jump (or sleep) to it.
/// </summary>
public sealed class DeviceClock
{
    private ITimedDevice[] _timed = [];
    private long _nowNs;

    /// <summary>Current virtual time in nanoseconds. Never goes backwards.</summary>
    public long NowNs => _nowNs;

    /// <summary>Moves virtual time forward to <paramref name="nowNs"/>; earlier values are ignored.</summary>
    public void SetNow(long nowNs)
    {
        if (nowNs > _nowNs)
        {
            _nowNs = nowNs;
        }
    }

    /// <summary>Moves virtual time forward by <paramref name="deltaNs"/> (negative values are ignored).</summary>
    public void Advance(long deltaNs)
    {
        if (deltaNs > 0)
        {
            _nowNs = deltaNs > long.MaxValue - _nowNs ? long.MaxValue : _nowNs + deltaNs;
        }
    }

    /// <summary>Adds a device whose deadlines this clock reports. Done while the machine is built.</summary>
    public void Register(ITimedDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var grown = new ITimedDevice[_timed.Length + 1];
        _timed.CopyTo(grown, 0);
        grown[^1] = device;
        _timed = grown;
    }

    /// <summary>The earliest deadline of any registered device, or long.MaxValue when none waits.</summary>
    public long NextDeadlineNs()
    {
        long next = long.MaxValue;
        foreach (var device in _timed)
        {
            long deadline = device.NextDeadlineNs;
            if (deadline < next)
            {
                next = deadline;
            }
        }
        return next;
    }

    /// <summary>Lets every registered device catch up with the current time.</summary>
    public void RunDue()
    {
        foreach (var device in _timed)
        {
            device.OnClock();
        }
    }

    /// <summary>
    /// HLT in deterministic mode: jump to the earliest deadline (if it is in the future) and run
    /// the devices. Returns false when nothing will ever wake the VM (no deadline at all).
    /// </summary>
    public bool JumpToNextDeadline()
    {
        long next = NextDeadlineNs();
        if (next == long.MaxValue)
        {
            return false;
        }
        SetNow(next);
        RunDue();
        return true;
    }

    /// <summary>Whole ticks of a <paramref name="hz"/> clock elapsed in <paramref name="ns"/> nanoseconds.</summary>
    public static long TicksFromNs(long ns, long hz) => (long)((Int128)ns * hz / 1_000_000_000);

    /// <summary>The first nanosecond at which <paramref name="ticks"/> ticks of a <paramref name="hz"/> clock have elapsed.</summary>
    public static long NsFromTicks(long ticks, long hz)
    {
        Int128 ns = ((Int128)ticks * 1_000_000_000 + hz - 1) / hz;
        return ns > long.MaxValue ? long.MaxValue : (long)ns;
    }
}
