using System.Buffers.Binary;
using Rkt.Kvm.Vmm.Memory;
using Serilog;

namespace Rkt.Kvm.Vmm.Devices.Virtio;

/// <summary>
/// The virtio-mmio transport, version 2 (virtio 1.x, "modern" only), one 4 KiB window per
/// device. Register values come from the guest and are validated: a queue is only made ready
/// when its size and ring addresses are sane; a driver that breaks the protocol gets the device
/// marked DEVICE_NEEDS_RESET instead of an exception on the vCPU thread.
/// Register accesses come from vCPU threads; the device itself only ever runs on the
/// <see cref="IDeviceExecutor"/>'s thread (activation, reset and queue notifies are handed to it),
/// so a device needs no locking of its own.
/// </summary>
public sealed class MmioTransport : IBusDevice
{
    public const ulong WindowSize = 0x1000;
    public const uint MagicValue = 0x74726976; // "virt"
    public const uint Version = 2;
    public const uint VendorId = 0x4B54_5252; // "RRTK"
    public const ulong FeatureVersion1 = 1UL << 32;
    /// <summary>VIRTIO_F_INDIRECT_DESC: a device that offers it gets queues that accept indirect tables once the driver accepts it.</summary>
    public const ulong FeatureIndirectDesc = 1UL << 28;
    public const uint InterruptUsedBuffer = 1, InterruptConfigChange = 2;

    // Device status bits.
    public const uint StatusAcknowledge = 1, StatusDriver = 2, StatusDriverOk = 4, StatusFeaturesOk = 8, StatusNeedsReset = 64, StatusFailed = 128;

    /// <summary>Offset of QueueNotify: the register ioeventfd can take over (the value written is the queue index).</summary>
    public const int QueueNotifyOffset = RegQueueNotify;

    // Register offsets.
    private const int RegMagic = 0x000, RegVersion = 0x004, RegDeviceId = 0x008, RegVendorId = 0x00C,
        RegDeviceFeatures = 0x010, RegDeviceFeaturesSel = 0x014, RegDriverFeatures = 0x020, RegDriverFeaturesSel = 0x024,
        RegQueueSel = 0x030, RegQueueNumMax = 0x034, RegQueueNum = 0x038, RegQueueReady = 0x044, RegQueueNotify = 0x050,
        RegInterruptStatus = 0x060, RegInterruptAck = 0x064, RegStatus = 0x070,
        RegQueueDescLow = 0x080, RegQueueDescHigh = 0x084, RegQueueDriverLow = 0x090, RegQueueDriverHigh = 0x094,
        RegQueueDeviceLow = 0x0A0, RegQueueDeviceHigh = 0x0A4, RegConfigGeneration = 0x0FC, RegConfig = 0x100;

    private sealed class QueueSetup
    {
        public ushort Size;
        public ulong Desc, Driver, Device;
        public SplitQueue? Ready;
    }

    private readonly object _lock = new();
    private readonly IVirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly IInterruptLine _interrupt;
    private readonly IDeviceExecutor _executor;
    private readonly ILogger _log;
    private readonly QueueSetup[] _queues;
    private readonly Action[] _notifyActions;
    private uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _status, _interruptStatus;
    private ulong _driverFeatures;
    private bool _lineAsserted;

    public MmioTransport(IVirtioDevice device, GuestMemory memory, IInterruptLine interrupt, IDeviceExecutor executor, ILogger log)
    {
        _device = device;
        _memory = memory;
        _interrupt = interrupt;
        _executor = executor;
        _log = log;
        _queues = device.QueueMaxSizes.Select(_ => new QueueSetup()).ToArray();
        // One cached delegate per queue, so a notify allocates nothing.
        _notifyActions = Enumerable.Range(0, _queues.Length).Select(i => (Action)(() => ProcessNotify(i))).ToArray();
    }

    public int QueueCount => _queues.Length;

    public uint DeviceId => _device.DeviceId;

    private ulong OfferedFeatures => _device.Features | FeatureVersion1;

    public void Read(ulong offset, Span<byte> data)
    {
        lock (_lock)
        {
            if (offset >= RegConfig)
            {
                var config = _device.Config;
                for (int i = 0; i < data.Length; i++)
                {
                    ulong at = offset - RegConfig + (ulong)i;
                    data[i] = at < (ulong)config.Length ? config[(int)at] : (byte)0;
                }
                return;
            }
            if (data.Length != 4 || offset % 4 != 0) { data.Clear(); return; }
            BinaryPrimitives.WriteUInt32LittleEndian(data, ReadRegister((int)offset));
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        Action? deviceWork;
        lock (_lock)
        {
            if (offset >= RegConfig || data.Length != 4 || offset % 4 != 0) return; // config is read-only; odd widths ignored
            uint value = BinaryPrimitives.ReadUInt32LittleEndian(data);
            if (offset == RegQueueNotify)
            {
                // Without ioeventfd the notify arrives here; hand it to the device thread either way.
                if (value < _queues.Length) _executor.Post(_notifyActions[value]);
                return;
            }
            deviceWork = WriteRegister((int)offset, value);
        }
        // Activation and reset run on the device thread, outside our lock: the device calls back into SignalUsed, which takes it.
        if (deviceWork is not null) _executor.Invoke(deviceWork);
    }

    /// <summary>A notify for <paramref name="queue"/> (from an ioeventfd or a QueueNotify write); runs on the device thread.</summary>
    public void ProcessNotify(int queue)
    {
        lock (_lock)
        {
            if ((_status & StatusDriverOk) == 0 || (_status & StatusNeedsReset) != 0 || (uint)queue >= _queues.Length || _queues[queue].Ready is null) return;
        }
        if (_device.OnNotify(queue)) SignalUsed(queue);
    }

    private uint ReadRegister(int register) => register switch
    {
        RegMagic => MagicValue,
        RegVersion => Version,
        RegDeviceId => _device.DeviceId,
        RegVendorId => VendorId,
        RegDeviceFeatures => _deviceFeaturesSel switch
        {
            0 => (uint)OfferedFeatures,
            1 => (uint)(OfferedFeatures >> 32),
            _ => 0,
        },
        RegQueueNumMax => SelectedQueue is null ? 0u : _device.QueueMaxSizes[(int)_queueSel],
        RegQueueReady => SelectedQueue?.Ready is null ? 0u : 1u,
        RegInterruptStatus => _interruptStatus,
        RegStatus => _status,
        RegConfigGeneration => 0,
        _ => 0,
    };

    private QueueSetup? SelectedQueue => _queueSel < _queues.Length ? _queues[_queueSel] : null;

    /// <summary>Applies a register write; returns device work (activation or reset) to run once our lock is released.</summary>
    private Action? WriteRegister(int register, uint value)
    {
        switch (register)
        {
            case RegDeviceFeaturesSel: _deviceFeaturesSel = value; break;
            case RegDriverFeaturesSel: _driverFeaturesSel = value; break;
            case RegDriverFeatures when (_status & StatusFeaturesOk) == 0 && _driverFeaturesSel <= 1:
                SetHalf(ref _driverFeatures, high: _driverFeaturesSel == 1, value);
                break;
            case RegQueueSel: _queueSel = value; break;
            case RegQueueNum when SelectedQueue is { Ready: null } q: q.Size = (ushort)Math.Min(value, ushort.MaxValue); break;
            // Ring addresses may only change while the queue is not ready.
            case RegQueueDescLow or RegQueueDescHigh when SelectedQueue is { Ready: null } q: SetHalf(ref q.Desc, register == RegQueueDescHigh, value); break;
            case RegQueueDriverLow or RegQueueDriverHigh when SelectedQueue is { Ready: null } q: SetHalf(ref q.Driver, register == RegQueueDriverHigh, value); break;
            case RegQueueDeviceLow or RegQueueDeviceHigh when SelectedQueue is { Ready: null } q: SetHalf(ref q.Device, register == RegQueueDeviceHigh, value); break;
            case RegQueueReady: SetQueueReady(value == 1); break;
            case RegInterruptAck:
                _interruptStatus &= ~value;
                UpdateLine();
                break;
            case RegStatus: return SetStatus(value);
        }
        return null;
    }

    /// <summary>64-bit values are written as two 32-bit registers.</summary>
    private static void SetHalf(ref ulong field, bool high, uint value) =>
        field = high ? (field & 0xFFFF_FFFFUL) | ((ulong)value << 32) : (field & ~0xFFFF_FFFFUL) | value;

    private void SetQueueReady(bool ready)
    {
        if (SelectedQueue is not { } q) return;
        if (!ready) { q.Ready = null; return; }
        if (q.Size == 0 || q.Size > _device.QueueMaxSizes[(int)_queueSel])
        {
            NeedsReset($"queue {_queueSel} size {q.Size} exceeds its maximum {_device.QueueMaxSizes[(int)_queueSel]}");
            return;
        }
        try
        {
            q.Ready = new SplitQueue(_memory, q.Size, q.Desc, q.Driver, q.Device, indirectAllowed: (_driverFeatures & FeatureIndirectDesc) != 0);
        }
        catch (VirtqueueException e)
        {
            NeedsReset($"queue {_queueSel}: {e.Message}");
        }
    }

    private Action? SetStatus(uint value)
    {
        if (value == 0)
        {
            _status = 0;
            _interruptStatus = 0;
            _driverFeatures = 0;
            foreach (var q in _queues) { q.Ready = null; q.Size = 0; q.Desc = q.Driver = q.Device = 0; }
            UpdateLine();
            return _device.Reset;
        }
        if ((value & StatusFeaturesOk) != 0 && (_status & StatusFeaturesOk) == 0)
        {
            // Accept only features we offered, and insist on the modern interface.
            if ((_driverFeatures & ~OfferedFeatures) != 0 || (_driverFeatures & FeatureVersion1) == 0)
                value &= ~StatusFeaturesOk;
        }
        bool activating = (value & StatusDriverOk) != 0 && (_status & StatusDriverOk) == 0;
        _status = value | (_status & StatusNeedsReset);
        if (activating)
        {
            if (_queues.Any(q => q.Ready is null))
            {
                NeedsReset("DRIVER_OK with a queue that is not ready");
                return null;
            }
            ulong features = _driverFeatures;
            var queues = _queues.Select(q => q.Ready!).ToArray();
            return () => _device.Activate(features, queues, SignalUsed);
        }
        return null;
    }

    private void NeedsReset(string why)
    {
        _log.Warning("virtio device {DeviceId}: {Why}; marking it DEVICE_NEEDS_RESET", _device.DeviceId, why);
        _status |= StatusNeedsReset;
        _interruptStatus |= InterruptConfigChange;
        UpdateLine();
    }

    /// <summary>The device put buffers in a used ring: raise the used-buffer interrupt.</summary>
    public void SignalUsed(int queue)
    {
        lock (_lock)
        {
            _interruptStatus |= InterruptUsedBuffer;
            UpdateLine();
        }
    }

    /// <summary>Why this device cannot be snapshotted now, or null. Device thread, vCPUs paused.</summary>
    public string? SnapshotBlocker
    {
        get
        {
            lock (_lock)
            {
                if ((_status & StatusNeedsReset) != 0) return "it needs a reset";
                if (_status != 0 && (_status & StatusDriverOk) == 0) return "its driver is still setting it up";
            }
            return _device.SnapshotBlocker;
        }
    }

    public TransportState SaveState()
    {
        lock (_lock)
        {
            return new TransportState(_device.DeviceId, _status, _interruptStatus, _driverFeatures, _deviceFeaturesSel, _driverFeaturesSel, _queueSel,
                _queues.Select(q => new QueueState(q.Size, q.Desc, q.Driver, q.Device, q.Ready is not null,
                    q.Ready?.NextAvailable ?? 0, q.Ready?.NextUsed ?? 0)).ToList());
        }
    }

    /// <summary>
    /// Puts the transport back where a snapshot left it, before any vCPU runs: the queues are
    /// validated again (the file is input like any other) and an active device is re-activated
    /// with them. The interrupt controller's state came back with the VM, so a pending interrupt is
    /// not raised a second time.
    /// </summary>
    public void RestoreState(TransportState state)
    {
        if (state.DeviceId != _device.DeviceId) throw new InvalidDataException($"The snapshot has device {state.DeviceId} where this VM has device {_device.DeviceId}.");
        if (state.Queues.Count != _queues.Length) throw new InvalidDataException($"The snapshot's device {state.DeviceId} has {state.Queues.Count} queues, this one {_queues.Length}.");
        Action? activate = null;
        lock (_lock)
        {
            _status = state.Status;
            _interruptStatus = state.InterruptStatus;
            _driverFeatures = state.DriverFeatures;
            _deviceFeaturesSel = state.DeviceFeaturesSel;
            _driverFeaturesSel = state.DriverFeaturesSel;
            _queueSel = state.QueueSel;
            if ((_driverFeatures & ~OfferedFeatures) != 0) throw new InvalidDataException($"The snapshot's device {state.DeviceId} accepted features this device does not offer.");
            for (int i = 0; i < _queues.Length; i++)
            {
                var s = state.Queues[i];
                var q = _queues[i];
                (q.Size, q.Desc, q.Driver, q.Device, q.Ready) = (s.Size, s.Desc, s.Driver, s.Device, null);
                if (!s.Ready) continue;
                if (s.Size == 0 || s.Size > _device.QueueMaxSizes[i]) throw new InvalidDataException($"The snapshot's queue {i} of device {state.DeviceId} has size {s.Size}.");
                try
                {
                    q.Ready = new SplitQueue(_memory, s.Size, s.Desc, s.Driver, s.Device, indirectAllowed: (_driverFeatures & FeatureIndirectDesc) != 0);
                }
                catch (VirtqueueException e)
                {
                    throw new InvalidDataException($"The snapshot's queue {i} of device {state.DeviceId}: {e.Message}");
                }
                q.Ready.RestorePositions(s.NextAvailable, s.NextUsed);
            }
            _lineAsserted = _interruptStatus != 0;
            if ((_status & StatusDriverOk) != 0 && (_status & StatusNeedsReset) == 0)
            {
                if (_queues.Any(q => q.Ready is null)) throw new InvalidDataException($"The snapshot's device {state.DeviceId} is active with a queue that is not ready.");
                ulong features = _driverFeatures;
                var queues = _queues.Select(q => q.Ready!).ToArray();
                activate = () =>
                {
                    _device.Activate(features, queues, SignalUsed);
                    // A notify the guest made just before the snapshot may not have reached the old
                    // device (an ioeventfd not yet read): look at every queue once. Then the restore event.
                    for (int q = 0; q < queues.Length; q++)
                        if (_device.OnNotify(q)) SignalUsed(q);
                    _device.OnRestored();
                };
            }
        }
        if (activate is not null) _executor.Invoke(activate);
    }

    private void UpdateLine()
    {
        bool asserted = _interruptStatus != 0;
        if (asserted == _lineAsserted) return;
        _lineAsserted = asserted;
        _interrupt.SetLevel(asserted);
    }
}
