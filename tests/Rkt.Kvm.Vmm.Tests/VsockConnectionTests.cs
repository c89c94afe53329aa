using Rkt.Kvm.Vmm.Devices.Vsock;

namespace Rkt.Kvm.Vmm.Tests;

/// <summary>
/// The per-connection state machine on its own: packets and host events in, the packets it owes
/// the guest and the <see cref="VsockHostEffects"/> it asks of the muxer out. No socket, no guest
/// memory, no event loop.
/// </summary>
public class VsockConnectionTests
{
    private const ulong GuestCid = VsockGuestDriver.GuestCid;
    private const uint GuestPort = 1024, HostPort = HybridVsockMuxer.FirstHostPort;
    private const int Room = 4096; // the data buffer Linux posts after each header buffer

    private static VsockPacketHeader FromGuest(VsockOp op, uint length = 0, uint flags = 0, uint bufAlloc = 256 * 1024, uint fwdCnt = 0) =>
        VsockGuestDriver.Packet(GuestPort, HostPort, op, length, flags, bufAlloc, fwdCnt);

    private static VsockHostEffects Guest(VsockConnection c, VsockPacketHeader packet) => c.OnGuestPacket(packet, out _);

    /// <summary>A host-initiated connection the guest accepted, the REQUEST taken and the OK line due.</summary>
    private static VsockConnection Established(uint guestBufAlloc = 256 * 1024)
    {
        var c = VsockConnection.HostInitiated(GuestCid, HostPort, GuestPort);
        Assert.Equal(VsockOp.Request, c.NextPacketToGuest(Room, out _)?.Op);
        Assert.Equal(VsockHostEffects.CancelTimer | VsockHostEffects.SendOkLine, Guest(c, FromGuest(VsockOp.Response, bufAlloc: guestBufAlloc)));
        return c;
    }

    /// <summary>Everything the connection owes the guest now, as the muxer would take it with the host supplying <paramref name="hostBytes"/> (0: the host has nothing).</summary>
    private static List<VsockPacketHeader> Drain(VsockConnection c, int hostBytes = 0, int room = Room)
    {
        var packets = new List<VsockPacketHeader>();
        for (int guard = 0; guard < 100; guard++)
        {
            if (c.NextPacketToGuest(room, out int readLimit) is { } control) { packets.Add(control); continue; }
            if (readLimit == 0) return packets;
            if (hostBytes > 0)
            {
                int n = Math.Min(readLimit, hostBytes);
                hostBytes -= n;
                packets.Add(c.OnHostDataRead(n));
            }
            else c.OnHostReadNothing(endOfStream: false);
        }
        throw new InvalidOperationException("The connection owes the guest packets without end.");
    }

    [Fact]
    public void Host_initiated_connection_owes_the_guest_a_REQUEST_and_waits_for_RESPONSE()
    {
        var c = VsockConnection.HostInitiated(GuestCid, HostPort, GuestPort);
        Assert.Equal(VsockConnectionState.AwaitingResponse, c.State);
        Assert.True(c.HasPacketForGuest);
        var request = c.NextPacketToGuest(Room, out int readLimit);
        Assert.Equal(VsockPacketHeader.ToGuest(GuestCid, HostPort, GuestPort, VsockOp.Request, bufAlloc: VsockConnection.BufferSize), request);
        Assert.Equal(0, readLimit);
        Assert.False(c.HasPacketForGuest);
        Assert.Null(c.NextPacketToGuest(Room, out _));

        Assert.Equal(VsockHostEffects.CancelTimer | VsockHostEffects.SendOkLine, Guest(c, FromGuest(VsockOp.Response, bufAlloc: 5000, fwdCnt: 7)));
        Assert.Equal(VsockConnectionState.Established, c.State);
        Assert.Equal((5000u, 7u), (c.PeerBufAlloc, c.PeerFwdCnt));
    }

    [Fact]
    public void Guest_initiated_connection_owes_a_RESPONSE_and_takes_the_guest_credit_from_the_REQUEST()
    {
        var c = VsockConnection.GuestInitiated(GuestCid, VsockGuestDriver.Packet(40000, 5000, VsockOp.Request, bufAlloc: 300, fwdCnt: 0));
        Assert.Equal(VsockConnectionState.Established, c.State);
        Assert.Equal((5000u, 40000u, 300u), (c.LocalPort, c.PeerPort, c.PeerCredit));
        var response = c.NextPacketToGuest(Room, out _);
        Assert.Equal(VsockPacketHeader.ToGuest(GuestCid, 5000, 40000, VsockOp.Response, bufAlloc: VsockConnection.BufferSize), response);
    }

    [Fact]
    public void A_guest_RST_closes_quietly()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.Close, Guest(c, FromGuest(VsockOp.Rst)));
        Assert.Equal(VsockConnectionState.Closed, c.State);
        Assert.False(c.HasPacketForGuest);
        // Nothing more happens to a closed connection.
        Assert.Equal(VsockHostEffects.None, Guest(c, FromGuest(VsockOp.Rw, 10)));
        Assert.Equal(VsockHostEffects.None, c.Abort());
    }

    [Fact]
    public void A_guest_RST_to_the_REQUEST_closes_the_host_socket_without_a_reply()
    {
        var c = VsockConnection.HostInitiated(GuestCid, HostPort, GuestPort);
        c.NextPacketToGuest(Room, out _);
        Assert.Equal(VsockHostEffects.Close, Guest(c, FromGuest(VsockOp.Rst)));
    }

    [Theory]
    [InlineData(VsockOp.Request)]  // a second REQUEST: the guest lost track of the connection
    [InlineData(VsockOp.Response)] // RESPONSE to nothing
    public void Out_of_place_handshake_packets_reset_an_established_connection(VsockOp op)
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.Reset, Guest(c, FromGuest(op)));
        Assert.Equal(VsockConnectionState.Closed, c.State);
    }

    [Fact]
    public void No_RESPONSE_in_time_resets_but_a_late_timer_on_an_established_connection_does_nothing()
    {
        var waiting = VsockConnection.HostInitiated(GuestCid, HostPort, GuestPort);
        Assert.Equal(VsockHostEffects.Reset, waiting.OnResponseTimeout());
        Assert.Equal(VsockConnectionState.Closed, waiting.State);
        Assert.Equal(VsockHostEffects.None, Established().OnResponseTimeout());
    }

    // ---------------------------------------------------------------- host -> guest: credit

    [Fact]
    public void Host_data_is_offered_only_within_the_guest_credit_and_the_buffer_room()
    {
        var c = Established(guestBufAlloc: 100);
        Assert.False(c.HasPacketForGuest); // nothing readable yet
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.True(c.HasPacketForGuest);
        Assert.Null(c.NextPacketToGuest(Room, out int limit));
        Assert.Equal(100, limit);
        Assert.Null(c.NextPacketToGuest(30, out limit));
        Assert.Equal(30, limit); // the buffer is smaller than the credit

        var rw = c.OnHostDataRead(100);
        Assert.Equal(VsockPacketHeader.ToGuest(GuestCid, HostPort, GuestPort, VsockOp.Rw, 100, bufAlloc: VsockConnection.BufferSize), rw);
        Assert.Equal(0u, c.PeerCredit);
        Assert.False(c.HasPacketForGuest); // readable, but no credit
        Assert.Null(c.NextPacketToGuest(Room, out limit));
        Assert.Equal(0, limit);

        // The guest read 60 bytes.
        Assert.Equal(VsockHostEffects.None, Guest(c, FromGuest(VsockOp.CreditUpdate, bufAlloc: 100, fwdCnt: 60)));
        Assert.Null(c.NextPacketToGuest(Room, out limit));
        Assert.Equal(60, limit);
    }

    [Fact]
    public void One_packet_carries_at_most_64_KiB()
    {
        var c = Established(guestBufAlloc: 1 << 20);
        c.OnHostSocketReady(readable: true, hungUp: false);
        c.NextPacketToGuest(int.MaxValue, out int limit);
        Assert.Equal((int)VsockPacketHeader.MaxPayload, limit);
    }

    [Fact]
    public void In_flight_bytes_are_counted_across_the_u32_wrap()
    {
        var c = Established(guestBufAlloc: 1000);
        c.OnHostSocketReady(readable: true, hungUp: false);
        // 4 GiB less 100 bytes streamed to the guest, which read them all.
        c.OnHostDataRead(int.MaxValue);
        c.OnHostDataRead(int.MaxValue - 98);
        Assert.Equal(uint.MaxValue - 99, c.TxCnt);
        Guest(c, FromGuest(VsockOp.CreditUpdate, bufAlloc: 1000, fwdCnt: uint.MaxValue - 99));
        Assert.Equal(1000u, c.PeerCredit);
        c.OnHostDataRead(400); // tx_cnt wraps to 300
        Assert.Equal(300u, c.TxCnt);
        Assert.Equal(600u, c.PeerCredit); // 400 in flight of 1000
    }

    [Fact]
    public void A_guest_fwd_cnt_ahead_of_what_was_sent_grants_no_credit()
    {
        var c = Established(guestBufAlloc: 1000);
        c.OnHostSocketReady(readable: true, hungUp: false);
        // tx_cnt is 0: "in flight" wraps to nearly 2^32, beyond any buffer, so the connection waits instead of flooding the guest.
        Guest(c, FromGuest(VsockOp.CreditUpdate, bufAlloc: 1000, fwdCnt: 5));
        Assert.Equal(0u, c.PeerCredit);
        Assert.False(c.HasPacketForGuest);
    }

    // ---------------------------------------------------------------- guest -> host: credit

    [Fact]
    public void Guest_data_within_credit_is_forwarded_and_what_the_host_did_not_take_is_kept()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.ForwardPayload, Guest(c, FromGuest(VsockOp.Rw, 10)));
        c.OnGuestPayload("0123456789"u8, hostTook: 4);
        Assert.Equal((10u, 4u), (c.RxCnt, c.FwdCnt));
        Assert.Equal("456789"u8.ToArray(), c.PendingToHostBytes.ToArray());

        Assert.Equal(VsockHostEffects.None, c.OnHostTookPending(2));
        Assert.Equal("6789"u8.ToArray(), c.PendingToHostBytes.ToArray());
        Assert.Equal(VsockHostEffects.None, c.OnHostTookPending(4));
        Assert.Equal((0, 10u), (c.PendingToHost, c.FwdCnt));
    }

    [Fact]
    public void A_guest_that_sends_beyond_its_credit_is_reset_with_a_reason()
    {
        var c = Established();
        var chunk = new byte[VsockConnection.BufferSize / 2];
        // The host takes nothing: the guest may fill our buffer, and not one byte more.
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(VsockHostEffects.ForwardPayload, Guest(c, FromGuest(VsockOp.Rw, (uint)chunk.Length)));
            c.OnGuestPayload(chunk, hostTook: 0);
        }
        Assert.Equal((int)VsockConnection.BufferSize, c.PendingToHost);
        Assert.Equal(VsockHostEffects.Reset, c.OnGuestPacket(FromGuest(VsockOp.Rw, 1), out string? violation));
        Assert.Contains("beyond credit", violation);
        Assert.Equal(VsockConnectionState.Closed, c.State);
        Assert.Equal(0, c.PendingToHost); // the buffer went back with the connection
    }

    [Fact]
    public void Bytes_the_host_took_make_room_for_more()
    {
        var c = Established();
        var full = new byte[VsockConnection.BufferSize];
        Guest(c, FromGuest(VsockOp.Rw, (uint)full.Length));
        c.OnGuestPayload(full, hostTook: 0);
        c.OnHostTookPending(1000);
        Assert.True(c.WithinCredit(1000));
        Assert.False(c.WithinCredit(1001));
        Assert.Equal(VsockHostEffects.ForwardPayload, Guest(c, FromGuest(VsockOp.Rw, 1000)));
        c.OnGuestPayload(new byte[1000], hostTook: 0); // the buffer compacts to fit
        Assert.Equal((int)VsockConnection.BufferSize, c.PendingToHost);
    }

    [Theory]
    [InlineData(false)] // before the guest accepted: data has no connection to go to
    [InlineData(true)]  // after the guest said it sends no more
    public void Data_the_connection_cannot_take_resets_it(bool afterShutdown)
    {
        VsockConnection c;
        if (afterShutdown)
        {
            c = Established();
            Guest(c, FromGuest(VsockOp.Shutdown, flags: VsockPacketHeader.ShutdownSend));
        }
        else c = VsockConnection.HostInitiated(GuestCid, HostPort, GuestPort);
        Assert.Equal(VsockHostEffects.Reset, c.OnGuestPacket(FromGuest(VsockOp.Rw, 5), out string? violation));
        Assert.NotNull(violation);
    }

    [Fact]
    public void Forwarding_a_quarter_buffer_owes_the_guest_a_credit_update()
    {
        var c = Established();
        var data = new byte[VsockConnection.CreditUpdateThreshold - 1];
        Guest(c, FromGuest(VsockOp.Rw, (uint)data.Length));
        c.OnGuestPayload(data, hostTook: data.Length);
        Assert.False(c.PendingCreditUpdate);
        Guest(c, FromGuest(VsockOp.Rw, 1));
        c.OnGuestPayload([1], hostTook: 1);
        Assert.True(c.PendingCreditUpdate);
        var update = Assert.Single(Drain(c));
        Assert.Equal(VsockOp.CreditUpdate, update.Op);
        Assert.Equal((VsockConnection.BufferSize, VsockConnection.CreditUpdateThreshold), (update.BufAlloc, update.FwdCnt));
        Assert.False(c.PendingCreditUpdate);
    }

    [Fact]
    public void Credit_kept_for_the_host_is_reported_once_the_host_takes_it()
    {
        var c = Established();
        var data = new byte[VsockConnection.CreditUpdateThreshold];
        Guest(c, FromGuest(VsockOp.Rw, (uint)data.Length));
        c.OnGuestPayload(data, hostTook: 0);
        Assert.False(c.PendingCreditUpdate); // nothing freed yet
        c.OnHostTookPending(data.Length);
        Assert.True(c.PendingCreditUpdate);
    }

    [Fact]
    public void A_CREDIT_REQUEST_is_answered_and_any_packet_carries_the_credit()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.None, Guest(c, FromGuest(VsockOp.CreditRequest)));
        Assert.True(c.HasPacketForGuest);
        Assert.Equal(VsockOp.CreditUpdate, Assert.Single(Drain(c)).Op);

        // A data packet answers it as well: every header carries buf_alloc and fwd_cnt.
        Guest(c, FromGuest(VsockOp.CreditRequest));
        c.OnHostSocketReady(readable: true, hungUp: false);
        var packets = Drain(c, hostBytes: 10);
        Assert.Equal([VsockOp.Rw], packets.Select(p => p.Op));
        Assert.False(c.PendingCreditUpdate);
    }

    // ---------------------------------------------------------------- shutdown and end

    [Fact]
    public void Guest_shutdown_of_both_directions_with_nothing_pending_is_answered_with_RST()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.Reset, Guest(c, FromGuest(VsockOp.Shutdown, flags: VsockPacketHeader.ShutdownReceive | VsockPacketHeader.ShutdownSend)));
        Assert.Equal(VsockConnectionState.Closed, c.State);
    }

    [Fact]
    public void Guest_shutdown_waits_for_the_host_to_take_what_is_pending_then_resets()
    {
        var c = Established();
        Guest(c, FromGuest(VsockOp.Rw, 3));
        c.OnGuestPayload("abc"u8, hostTook: 0);
        Assert.Equal(VsockHostEffects.StartShutdownTimer, Guest(c, FromGuest(VsockOp.Shutdown, flags: 3)));
        Assert.Equal(VsockConnectionState.Closing, c.State);
        Assert.False(c.HasPacketForGuest); // a closing connection sends the guest nothing but the final RST
        Assert.Equal(VsockHostEffects.None, c.OnHostTookPending(1));
        Assert.Equal(VsockHostEffects.ShutdownHostWrite | VsockHostEffects.Reset, c.OnHostTookPending(2));
        Assert.Equal(VsockConnectionState.Closed, c.State);
    }

    [Fact]
    public void A_shutdown_the_host_does_not_complete_in_time_resets()
    {
        var c = Established();
        Guest(c, FromGuest(VsockOp.Rw, 3));
        c.OnGuestPayload("abc"u8, hostTook: 0);
        Guest(c, FromGuest(VsockOp.Shutdown, flags: 3));
        Assert.Equal(VsockHostEffects.Reset, c.OnShutdownTimeout());
        Assert.Equal(VsockHostEffects.None, c.OnShutdownTimeout()); // a second timer finds it gone
    }

    [Fact]
    public void Guest_shutdown_of_sending_shuts_the_host_write_side_once_everything_is_delivered()
    {
        var now = Established();
        Assert.Equal(VsockHostEffects.ShutdownHostWrite, Guest(now, FromGuest(VsockOp.Shutdown, flags: VsockPacketHeader.ShutdownSend)));
        Assert.Equal(VsockConnectionState.Established, now.State);

        var later = Established();
        Guest(later, FromGuest(VsockOp.Rw, 3));
        later.OnGuestPayload("abc"u8, hostTook: 1);
        Assert.Equal(VsockHostEffects.None, Guest(later, FromGuest(VsockOp.Shutdown, flags: VsockPacketHeader.ShutdownSend)));
        Assert.Equal(VsockHostEffects.ShutdownHostWrite, later.OnHostTookPending(2));
    }

    [Fact]
    public void Guest_shutdown_of_receiving_stops_host_data()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.None, Guest(c, FromGuest(VsockOp.Shutdown, flags: VsockPacketHeader.ShutdownReceive)));
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.False(c.HasPacketForGuest);
        Assert.Empty(Drain(c, hostBytes: 100));
    }

    [Fact]
    public void Host_end_of_stream_becomes_SHUTDOWN_of_sending_after_the_data_before_it()
    {
        var c = Established();
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.Equal(VsockOp.Rw, c.OnHostDataRead(5).Op);
        Assert.Null(c.NextPacketToGuest(Room, out int limit));
        Assert.True(limit > 0);
        Assert.Equal(VsockHostEffects.None, c.OnHostReadNothing(endOfStream: true));
        var shutdown = Assert.Single(Drain(c));
        Assert.Equal((VsockOp.Shutdown, VsockPacketHeader.ShutdownSend), (shutdown.Op, shutdown.Flags));
        // The host's stream is over: even a new readiness event offers no more data.
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.Empty(Drain(c));
    }

    [Fact]
    public void Host_hang_up_becomes_SHUTDOWN_of_both_and_a_timer_for_the_RST()
    {
        var c = Established();
        c.OnHostSocketReady(readable: true, hungUp: true);
        Assert.Null(c.NextPacketToGuest(Room, out int limit));
        Assert.True(limit > 0);
        Assert.Equal(VsockHostEffects.StartShutdownTimer, c.OnHostReadNothing(endOfStream: true));
        var shutdown = Assert.Single(Drain(c));
        Assert.Equal(VsockPacketHeader.ShutdownReceive | VsockPacketHeader.ShutdownSend, shutdown.Flags);
        // The guest answers RST before the timer: closed quietly.
        Assert.Equal(VsockHostEffects.Close, Guest(c, FromGuest(VsockOp.Rst)));
    }

    [Fact]
    public void A_read_that_would_block_waits_for_the_next_readiness_event()
    {
        var c = Established();
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.Empty(Drain(c)); // the host had nothing after all
        Assert.False(c.HostReadable);
        Assert.False(c.HasPacketForGuest);
        c.OnHostSocketReady(readable: true, hungUp: false);
        Assert.True(c.HasPacketForGuest);
    }

    [Fact]
    public void A_receive_buffer_with_no_room_for_data_still_carries_control_packets()
    {
        var c = Established();
        c.OnHostSocketReady(readable: true, hungUp: false);
        Guest(c, FromGuest(VsockOp.CreditRequest));
        Assert.Equal(VsockOp.CreditUpdate, c.NextPacketToGuest(payloadRoom: 0, out int limit)?.Op);
        Assert.Equal(0, limit);
    }

    [Fact]
    public void Packets_to_the_guest_come_in_protocol_order()
    {
        // A guest-initiated connection with everything due at once: RESPONSE, then data, then SHUTDOWN, then nothing
        // (the credit update rides on the earlier headers).
        var c = VsockConnection.GuestInitiated(GuestCid, VsockGuestDriver.Packet(40000, 5000, VsockOp.Request));
        Guest(c, VsockGuestDriver.Packet(40000, 5000, VsockOp.CreditRequest));
        c.OnHostSocketReady(readable: true, hungUp: false);
        var packets = Drain(c, hostBytes: Room + 10);
        c.OnHostReadNothing(endOfStream: true);
        packets.AddRange(Drain(c));
        Assert.Equal([VsockOp.Response, VsockOp.Rw, VsockOp.Rw, VsockOp.Shutdown], packets.Select(p => p.Op));
        Assert.Equal([0u, (uint)Room, 10u, 0u], packets.Select(p => p.Length));
        Assert.All(packets, p => Assert.Equal((VsockPacketHeader.HostCid, GuestCid, 5000u, 40000u), (p.SrcCid, p.DstCid, p.SrcPort, p.DstPort)));
    }

    [Fact]
    public void Abort_resets_once()
    {
        var c = Established();
        Assert.Equal(VsockHostEffects.Reset, c.Abort());
        Assert.Equal(VsockHostEffects.None, c.Abort());
        Assert.Null(c.NextPacketToGuest(Room, out _));
    }
}
