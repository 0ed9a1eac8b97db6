package emulator

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"
)

// adminRequest is the body of POST /admin/<action>.
type adminRequest struct {
	Enrollment *Enrollment     `json:"enrollment,omitempty"`
	Fault      *Fault          `json:"fault,omitempty"`
	Scope      string          `json:"scope,omitempty"`
	Group      bool            `json:"group,omitempty"`
	ID         string          `json:"id,omitempty"`
	Hub        string          `json:"hub,omitempty"`
	Device     string          `json:"device,omitempty"`
	Module     string          `json:"module,omitempty"`
	Disabled   bool            `json:"disabled,omitempty"`
	Auth       *Authentication `json:"authentication,omitempty"`
	Seconds    float64         `json:"seconds,omitempty"`
	On         bool            `json:"on,omitempty"`
	Label      string          `json:"label,omitempty"`
	PrimaryKey string          `json:"primaryKey,omitempty"`
}

func adminClassify(r *http.Request) (string, string) { return r.URL.Path, "" }

// adminHandler serves the optional HTTPS control API (emulator.md §6). Every request
// needs "Authorization: Bearer <AdminToken>".
func (e *Emulator) adminHandler() http.Handler {
	shape := func(w http.ResponseWriter, status int, kind string) {
		writeJSON(w, status, map[string]string{"error": http.StatusText(status)})
	}
	return e.serve("admin", func() string { return "admin" }, adminClassify, shape, func(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
		want := "Bearer " + e.cfg.AdminToken
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad admin token"})
			return
		}
		if r.Method == http.MethodGet {
			switch r.URL.Path {
			case "/admin/log":
				writeJSON(w, http.StatusOK, e.Log())
			case "/admin/enrollments":
				writeJSON(w, http.StatusOK, e.Enrollments())
			case "/admin/hubs":
				writeJSON(w, http.StatusOK, e.HubNames())
			case "/admin/device":
				q := r.URL.Query()
				d, mods, ok := e.GetDevice(q.Get("hub"), q.Get("device"))
				if !ok {
					writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such device"})
					return
				}
				writeJSON(w, http.StatusOK, map[string]any{"device": d, "modules": mods})
			default:
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown admin route"})
			}
			return
		}
		var req adminRequest
		if len(rc.body) > 0 {
			if err := json.Unmarshal(rc.body, &req); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON: " + err.Error()})
				return
			}
		}
		if err := e.adminAction(r.URL.Path, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"result": "ok"})
	})
}

type adminError string

func (a adminError) Error() string { return string(a) }

func (e *Emulator) adminAction(path string, req *adminRequest) error {
	switch path {
	case "/admin/enrollments":
		if req.Enrollment == nil {
			return adminError("enrollment required")
		}
		return e.AddEnrollment(*req.Enrollment)
	case "/admin/enrollments/remove":
		e.RemoveEnrollment(req.Scope, req.Group, req.ID)
	case "/admin/enrollments/disable":
		return e.DisableEnrollment(req.Scope, req.Group, req.ID, req.Disabled)
	case "/admin/enrollments/rotate":
		_, _, err := e.RotateEnrollmentKeys(req.Scope, req.Group, req.ID, req.PrimaryKey, "")
		return err
	case "/admin/reassign":
		e.Reassign(req.ID, req.Hub)
	case "/admin/devices":
		_, err := e.CreateDevice(req.Hub, req.Device, req.Auth)
		return err
	case "/admin/devices/drop":
		return e.DropDevice(req.Hub, req.Device, req.Module)
	case "/admin/devices/status":
		return e.SetDeviceStatus(req.Hub, req.Device, !req.Disabled)
	case "/admin/modules/recreate":
		_, err := e.RecreateModule(req.Hub, req.Device, req.Module)
		return err
	case "/admin/faults":
		if req.Fault == nil {
			return adminError("fault required")
		}
		e.AddFault(*req.Fault)
	case "/admin/faults/clear":
		e.ClearFaults()
	case "/admin/clock/offset":
		e.SetClockOffset(time.Duration(req.Seconds * float64(time.Second)))
	case "/admin/clock/expire-now":
		e.SetExpireNow(req.On)
	case "/admin/est/validity":
		e.SetESTValidity(req.Label, time.Duration(req.Seconds*float64(time.Second)))
	case "/admin/est/revoke":
		e.RevokeSubject(req.ID)
	case "/admin/est/bootstrap-once":
		e.RefuseBootstrapAfterFirstUse(req.On)
	case "/admin/log/clear":
		e.ClearLog()
	case "/admin/reset":
		e.Reset()
	default:
		return adminError("unknown admin route " + path)
	}
	return nil
}
